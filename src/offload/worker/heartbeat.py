"""Lease renewal in its own thread, so a task that blocks the event loop keeps its lease.

A time-only reclaim rule is how live jobs get run twice (RELIABILITY.md §3.2: a CPU-heavy
task starves the heartbeat, the lease expires, another worker runs the job). The
:class:`LeaseKeeper` renews every held lease from a thread with its own event loop and
its own broker connection, so renewal does not wait for the worker's loop. What it finds
(a lost lease, a cancel request) is posted back to the worker's loop, where the job's task
is interrupted once the loop is free.

It also watches the worker's loop: each tick it posts a no-op to it, and if the previous
one has not run for longer than the tick, it reports the loop as blocked, naming the jobs
that were running. Renewal carries on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from offload.errors import BrokerError

if TYPE_CHECKING:
    from offload.brokers.base import Broker, Delivery, LeaseState, WorkerInfo

__all__ = ["LeaseKeeper"]

log = logging.getLogger("offload.worker")

Outcomes = Callable[[list[tuple["Delivery", "LeaseState"]]], None]


class LeaseKeeper:
    """Renews a worker's leases and registration from a thread of its own.

    Args:
        make_broker: builds the broker the thread uses (its own connection: clients of
            Redis and PostgreSQL belong to one event loop).
        held: returns the deliveries to renew (called from the keeper's thread).
        info: returns the worker's registration record.
        on_states: called on the worker's loop with each delivery's lease state.
        running: names of the jobs running now (for the blocked-loop report).
        worker_loop: the worker's event loop.
        interval_s: seconds between renewals.
        lease_s: the lease length each renewal grants.
    """

    def __init__(
        self,
        *,
        make_broker: Callable[[], Broker],
        held: Callable[[], Sequence[Delivery]],
        info: Callable[[], WorkerInfo],
        on_states: Outcomes,
        running: Callable[[], list[str]],
        worker_loop: asyncio.AbstractEventLoop,
        interval_s: float,
        lease_s: float,
    ) -> None:
        self._make_broker = make_broker
        self._held = held
        self._info = info
        self._on_states = on_states
        self._running = running
        self._worker_loop = worker_loop
        self.interval_s = interval_s
        self.lease_s = lease_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._posted = self._pong = time.monotonic()
        self._blocked_since: float | None = None
        self._failing = False
        self.renewals = 0

    def start(self) -> None:
        """Start renewing in the background."""
        self._thread = threading.Thread(target=self._main, name="offload-leases", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop renewing (the last renewal stays in force until its lease ends)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        broker = self._make_broker()
        await self._open(broker)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self._watch_loop(started)
                await self._renew_or_report(broker)
                elapsed = time.monotonic() - started
                await asyncio.to_thread(self._stop.wait, max(0.0, self.interval_s - elapsed))
        finally:
            with contextlib.suppress(Exception):
                await broker.close()

    async def _open(self, broker: Broker) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                await broker.open()
                return
            except BrokerError as exc:
                log.warning("lease keeper cannot reach the broker (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _renew_or_report(self, broker: Broker) -> None:
        """Renew; on a broker error say so once per outage (retried next tick)."""
        try:
            await self._renew(broker)
        except BrokerError as exc:
            if not self._failing:
                log.warning(
                    "cannot renew leases (%s); retrying every %.1fs. Jobs whose lease "
                    "runs out meanwhile will be run again elsewhere.",
                    exc,
                    self.interval_s,
                    extra={"action": "lease_renewal_failed"},
                )
            self._failing = True
            return
        if self._failing:
            log.info("lease renewal works again", extra={"action": "lease_renewal_back"})
            self._failing = False

    async def _renew(self, broker: Broker) -> None:
        held = list(self._held())
        if held:
            states = await broker.extend(held, self.lease_s)
            self.renewals += 1
            self._post(list(zip(held, states, strict=True)))
        await broker.register_worker(self._info(), ttl_s=self.interval_s * 3 + 5)

    def _post(self, pairs: list[tuple[Delivery, LeaseState]]) -> None:
        with contextlib.suppress(RuntimeError):  # the worker's loop has closed
            self._worker_loop.call_soon_threadsafe(self._on_states, pairs)

    def _watch_loop(self, now: float) -> None:
        """Report a worker loop that has left our last no-op waiting for over a second."""
        waiting = self._pong < self._posted
        stalled = now - self._posted if waiting else 0.0
        if stalled > max(1.0, self.interval_s / 2):
            if self._blocked_since is None:
                self._blocked_since = self._posted
                log.warning(
                    "the worker's event loop has been blocked for %.1fs (running: %s): an "
                    "async task is doing blocking work; make it a sync task (it then runs in "
                    "a thread) or use executor='process'. Leases are still being renewed.",
                    stalled,
                    ", ".join(self._running()[:5]) or "nothing",
                    extra={"action": "loop_blocked", "blocked_s": round(stalled, 1)},
                )
        elif not waiting and self._blocked_since is not None:
            log.info(
                "the worker's event loop runs again after %.1fs",
                self._pong - self._blocked_since,
                extra={"action": "loop_unblocked"},
            )
            self._blocked_since = None
        if not waiting:
            self._posted = now
            with contextlib.suppress(RuntimeError):
                self._worker_loop.call_soon_threadsafe(self._mark)

    def _mark(self) -> None:
        self._pong = time.monotonic()
