"""The worker: keeps ``concurrency`` slots full, renews leases, recovers, shuts down cleanly.

One asyncio loop per process, with named side tasks that must never end on their own
(if one dies, the worker stops loudly):

* ``offload-claim``: claims exactly as many jobs as there are free slots (no unbounded
  prefetch) and starts one asyncio task per delivery;
* ``offload-settle``: writes outcomes in batches (:mod:`offload.worker.settler`);
* ``offload-heartbeat``: one ``extend`` call for every held lease, which also carries
  cancel requests; registers the worker; warns when the event loop was blocked;
* ``offload-maintenance``: ``recover_expired`` and ``prune`` on timers, so a crashed
  worker's jobs come back by themselves;
* ``offload-progress``: writes progress reports in batches.

Shutdown (SIGTERM, or :meth:`Worker.stop`): stop claiming, let running jobs finish for up
to ``grace_s``, then cancel the rest and *release* them (queued again at once, attempt not
counted) so another worker takes them without waiting for their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from offload.brokers import open_broker
from offload.brokers.base import Broker, Delivery, LeaseState, Release, Settlement, WorkerInfo
from offload.clock import Clock, system_clock
from offload.errors import BrokerUnavailable
from offload.message.codecs import get_codec
from offload.worker.executors import ProcessPool, ThreadPool
from offload.worker.heartbeat import LeaseKeeper
from offload.worker.runner import FollowUps, Runner, StopReason, run_key
from offload.worker.settler import Settler

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from offload.specs import Registry

__all__ = ["SideTask", "Worker", "WorkerOptions", "WorkerStats"]

log = logging.getLogger("offload.worker")

#: A named coroutine the worker runs beside its own loops (e.g. the scheduler); it must
#: run until cancelled. If it ends or fails, the worker stops loudly.
SideTask = tuple[str, "Callable[[Worker], Coroutine[Any, Any, None]]"]


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs.

    Attributes:
        queues: queues to serve; claims take turns across them.
        concurrency: jobs run at once (slots); the worker never holds more.
        lease_s: lease length; a crashed worker's jobs come back this long after it died.
        grace_s: on shutdown, how long running jobs may take to finish.
        poll_s: longest a claim waits for work before looping.
        heartbeat_s: lease renewal period (default ``lease_s / 3``).
        recover_every_s: how often expired leases are recovered (default ``lease_s / 4``,
            at most 5 s).
        prune_every_s: how often finished jobs past their TTL are deleted.
        processes: size of the process pool for ``executor="process"`` tasks.
        burst: stop once no job is ready and none is running (for batch runs and tests).
        worker_id: a stable id (default ``host:pid:random``).
        install_signals: handle SIGTERM/SIGINT (the CLI does).
        supervisor_pid: the supervising process, shown in the worker list.
        scheduler: also run the app's scheduler (it fires ticks only while it leads).
    """

    queues: Sequence[str] = ("default",)
    concurrency: int = 10
    lease_s: float = 30.0
    grace_s: float = 25.0
    poll_s: float = 1.0
    heartbeat_s: float | None = None
    recover_every_s: float | None = None
    prune_every_s: float = 60.0
    processes: int | None = None
    burst: bool = False
    worker_id: str | None = None
    install_signals: bool = False
    supervisor_pid: int | None = None
    scheduler: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_s <= 0:
            raise ValueError("lease_s must be positive")
        if not self.queues:
            raise ValueError("a worker needs at least one queue")


@dataclass
class WorkerStats:
    """What a worker did (returned by :meth:`Worker.run`)."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0
    settle_refused: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


class Worker:
    """Runs jobs from a broker until stopped. See the module docstring for its parts."""

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        options: WorkerOptions | None = None,
        *,
        clock: Clock = system_clock,
        follow_ups: FollowUps | None = None,
        side_tasks: Sequence[SideTask] = (),
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.options = opts = options or WorkerOptions()
        self.clock = clock
        self.id = opts.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self._extra_side_tasks = list(side_tasks)
        self._heartbeat_s = opts.heartbeat_s or opts.lease_s / 3
        self._recover_s = opts.recover_every_s or min(5.0, opts.lease_s / 4)
        # Deliveries whose slot is taken, running or with their outcome being written,
        # by (job id, lease token): a job recovered and claimed again by this worker while
        # its earlier run's outcome is still being refused is held twice.
        self._held: dict[tuple[str, int], Delivery] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, Delivery] = {}  # the delivery each task in _tasks runs
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closing = False  # set once the side tasks must end
        self._keeper: LeaseKeeper | None = None
        self._grace_s = opts.grace_s
        self._threads = ThreadPool()
        self._process_pool: ProcessPool | None = None
        self._progress_lock = threading.Lock()
        self._progress: dict[str, tuple[float, str | None]] = {}
        self._started_at = clock.now()
        self.settler = Settler(broker, self._on_settled)
        self.runner = Runner(
            registry,
            broker,
            get_codec(registry.codec_name),
            clock,
            self.id,
            self._threads,
            self._processes,
            self._report_progress,
            follow_ups,
        )

    # ------------------------------------------------------------------ control

    def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming and shut down (running jobs get ``grace_s`` to finish)."""
        if grace_s is not None:
            self._grace_s = grace_s
        if not self._stopping.is_set():
            log.info(
                "worker %s stopping (grace %.0fs)",
                self.id,
                self._grace_s,
                extra={"action": "worker_stopping"},
            )
        self._stopping.set()
        self._slot_freed.set()

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self._tasks)

    async def run(self) -> WorkerStats:
        """Run until :meth:`stop` (or, in burst mode, until no work is left)."""
        log.info(
            "worker %s serving %s with %d slots, lease %.0fs",
            self.id,
            ",".join(self.options.queues),
            self.options.concurrency,
            self.options.lease_s,
            extra={"action": "worker_started"},
        )
        self._install_signals()
        self._keeper = self._lease_keeper()
        self._keeper.start()
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.register_worker(self._info(), ttl_s=self._heartbeat_s * 3 + 5)
        side = [
            self._spawn(self.settler.run(), "offload-settle"),
            self._spawn(self._maintenance_loop(), "offload-maintenance"),
            self._spawn(self._progress_loop(), "offload-progress"),
            *(self._spawn(make(self), name) for name, make in self._extra_side_tasks),
        ]
        claim = self._spawn(self._claim_loop(), "offload-claim")
        try:
            done, _ = await asyncio.wait([claim, *side], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not claim:
                    raise RuntimeError(f"worker side task {task.get_name()} stopped") from (
                        task.exception() if not task.cancelled() else None
                    )
            claim.result()
        finally:
            await self._shutdown(claim, side)
        return self.stats

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro, name=name)

    def _install_signals(self) -> None:
        if not self.options.install_signals:
            return
        loop = asyncio.get_running_loop()
        presses = 0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                log.warning("second %s: stopping now, releasing running jobs", sig.name)
                self.stop(grace_s=0)
            else:
                self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    # ------------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        backoff = _Backoff()
        opts = self.options
        while not self._stopping.is_set():
            # A slot is taken until the job's outcome is written, not only while it runs:
            # a worker killed at any moment then holds at most `concurrency` unrecorded
            # jobs, which is exactly what can run again.
            free = opts.concurrency - len(self._held)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            written = self.settler.written
            try:
                got = await self.broker.claim(opts.queues, self.id, free, opts.lease_s, opts.poll_s)
            except BrokerUnavailable as exc:
                await backoff.wait(exc, self._stopping)
                continue
            backoff.reset()
            for d in got:
                self._start(d)
            if opts.burst and self._idle(got, written):
                self.stop()

    def _idle(self, got: list[Delivery], written_before_claim: int) -> bool:
        """Nothing claimed, running or being settled, and no outcome written during the
        claim (an outcome can carry follow-ups the claim could not see yet)."""
        return (
            not got
            and not self._tasks
            and not self.settler.pending
            and self.settler.written == written_before_claim
        )

    def _start(self, d: Delivery) -> None:
        if self._stopping.is_set():
            # Claimed while stopping: hand it straight back.
            self._held[run_key(d)] = d
            self.settler.submit(Release(d))
            return
        if d.job_id in self._tasks:
            # The broker handed out again a job this worker still runs: that run's lease
            # is gone (it expired unnoticed), so it stops, and this run goes on.
            self._interrupt(d.job_id, "lease_lost")
        self._held[run_key(d)] = d
        task = asyncio.get_running_loop().create_task(self._run_one(d), name=f"job:{d.job_id}")
        self._tasks[d.job_id] = task
        self._running[d.job_id] = d

    async def _run_one(self, d: Delivery) -> None:
        try:
            settlement = await self.runner.run(d)
        except Exception as exc:
            log.exception(
                "internal error running job %s",
                d.job_id,
                extra={
                    "action": "internal_error",
                    "job_id": d.job_id,
                    "task": d.name,
                    "attempt": d.attempts,
                },
            )
            settlement = self.runner.internal_error(d, exc)
        finally:
            if self._running.get(d.job_id) is d:
                del self._tasks[d.job_id], self._running[d.job_id]
        if settlement is None:
            self._held.pop(run_key(d), None)
            self._slot_freed.set()
            self.stats.lost += 1
        else:
            if self._progress:  # the last report, not written yet, goes before the outcome
                await self._flush_progress(d)
            self.settler.submit(settlement)

    def _on_settled(self, settlement: Settlement, ok: bool) -> None:
        self._held.pop(run_key(settlement.delivery), None)
        self._slot_freed.set()
        kind = type(settlement).__name__
        self.stats.by_state[kind] = self.stats.by_state.get(kind, 0) + 1
        if not ok:
            self.stats.settle_refused += 1
            log.warning(
                "outcome of job %s refused: its lease had expired and another worker may own it",
                settlement.delivery.job_id,
                extra=_job_extra("settle_refused", settlement.delivery),
            )
        elif kind == "Ack":
            self.stats.succeeded += 1
        elif kind in ("Bury", "MarkCancelled"):
            self.stats.failed += 1
        elif kind == "RetryLater":
            self.stats.retried += 1
        else:
            self.stats.released += 1

    # ------------------------------------------------------------------ heartbeat

    def _lease_keeper(self) -> LeaseKeeper:
        broker = self.broker

        def make_broker() -> Broker:
            # A store shared by processes gets its own connection for the keeper's loop;
            # the memory broker is this process's state and is thread-safe as it is.
            if not broker.capabilities.shared:
                return broker
            return open_broker(broker.url, clock=self.clock)

        return LeaseKeeper(
            make_broker=make_broker,
            held=lambda: list(self._held.values()),
            info=self._info,
            on_states=self._on_lease_states,
            running=lambda: [f"{d.name} ({d.job_id})" for d in self._held.values()],
            worker_loop=asyncio.get_running_loop(),
            interval_s=self._heartbeat_s,
            lease_s=self.options.lease_s,
        )

    def _on_lease_states(self, pairs: list[tuple[Delivery, LeaseState]]) -> None:
        for d, state in pairs:
            if self._running.get(d.job_id) is not d:
                # Not running (its outcome is being written), or an earlier run of a job
                # this worker claimed again: the job's current run keeps its lease.
                continue
            if state is LeaseState.LOST:
                self._interrupt(d.job_id, "lease_lost")
            elif state is LeaseState.CANCEL_REQUESTED:
                self._interrupt(d.job_id, "cancel_requested")

    async def heartbeat(self) -> None:
        """Renew every held lease once on this loop (the lease keeper does it on a timer)."""
        held = list(self._held.values())
        if held:
            states = await self.broker.extend(held, self.options.lease_s)
            self._on_lease_states(list(zip(held, states, strict=True)))
        await self.broker.register_worker(self._info(), ttl_s=self._heartbeat_s * 3 + 5)

    def _interrupt(self, job_id: str, why: StopReason) -> None:
        task, held = self._tasks.get(job_id), self._running.get(job_id)
        if task is None or held is None or run_key(held) in self.runner.stop_reasons:
            return
        if why == "lease_lost":
            log.warning(
                "lost the lease of job %s; abandoning it",
                job_id,
                extra=_job_extra("lease_lost", held),
            )
        ctx = self.runner.contexts.get(run_key(held))
        if ctx is not None:
            ctx.request_cancel()
        self.runner.stop_reasons[run_key(held)] = why
        task.cancel()

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=list(self.options.queues),
            concurrency=self.options.concurrency,
            started_at=self._started_at,
            state="stopping" if self._stopping.is_set() else "running",
            running=list(self._tasks)[:50],
            processed=self.stats.succeeded + self.stats.failed,
            failed=self.stats.failed,
            supervisor_pid=self.options.supervisor_pid,
        )

    # ------------------------------------------------------------------ maintenance

    async def _maintenance_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + random.uniform(0, self.options.prune_every_s)
        while not self._closing:
            await asyncio.sleep(self._recover_s * random.uniform(0.8, 1.2))
            try:
                await self.maintain(prune=loop.time() >= next_prune)
            except BrokerUnavailable as exc:
                log.warning("maintenance skipped, broker unavailable: %s", exc)
                continue
            if loop.time() >= next_prune:
                next_prune = loop.time() + self.options.prune_every_s

    async def maintain(self, *, prune: bool = True) -> int:
        """Recover expired leases (and prune expired records); return how many recovered."""
        recovered = 0
        while (n := await self.broker.recover_expired(1000)) > 0:
            recovered += n
            if n < 1000:
                break
        if recovered:
            log.warning(
                "recovered %d job(s) whose worker stopped renewing their lease",
                recovered,
                extra={"action": "jobs_recovered", "count": recovered},
            )
        pruned = 1000 if prune else 0
        while pruned >= 1000:  # a full batch: there may be more
            pruned = await self.broker.prune(1000)
        return recovered

    # ------------------------------------------------------------------ progress

    def _report_progress(self, job_id: str, value: float, message: str | None) -> None:
        with self._progress_lock:
            self._progress[job_id] = (value, message)

    async def _flush_progress(self, d: Delivery) -> None:
        with self._progress_lock:
            last = self._progress.pop(d.job_id, None)
        if last is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self.broker.set_progress(d, *last)

    async def _progress_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.2)
            with self._progress_lock:
                batch, self._progress = self._progress, {}
            for job_id, (value, message) in batch.items():
                d = self._running.get(job_id)
                if d is not None:
                    with contextlib.suppress(BrokerUnavailable):
                        await self.broker.set_progress(d, value, message)

    def _processes(self) -> ProcessPool:
        if self._process_pool is None:
            self._process_pool = ProcessPool(self.options.processes, self._report_progress)
        return self._process_pool

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self, claim: asyncio.Task[None], side: list[asyncio.Task[None]]) -> None:
        self.stop()
        claim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await claim
        running = list(self._tasks.values())
        if running:
            log.info("waiting up to %.0fs for %d running job(s)", self._grace_s, len(running))
            _, late = await asyncio.wait(running, timeout=self._grace_s)
            for job_id, task in list(self._tasks.items()):
                if task in late:
                    self.runner.stop_reasons.setdefault(run_key(self._running[job_id]), "shutdown")
                    task.cancel()
            if late:
                log.warning("releasing %d job(s) still running after the grace period", len(late))
                await asyncio.wait(late)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.settler.flush(), timeout=30)
        # A driver may swallow a cancellation (psycopg_pool on 3.11 can); the loops also
        # stop on this flag, and the wait is bounded so shutdown never hangs.
        self._closing = True
        for task in side:
            task.cancel()
        _, stuck = await asyncio.wait(side, timeout=10)
        for task in stuck:
            log.warning("worker side task %s did not stop in time", task.get_name())
        if self._keeper is not None:  # after the last outcome: leases renewed until here
            await asyncio.to_thread(self._keeper.stop)
        with contextlib.suppress(Exception):
            await self.broker.unregister_worker(self.id)
        self._threads.close()
        if self._process_pool is not None:
            self._process_pool.close()
        log.info(
            "worker %s stopped: %d succeeded, %d failed",
            self.id,
            self.stats.succeeded,
            self.stats.failed,
            extra={"action": "worker_stopped"},
        )


def _job_extra(action: str, d: Delivery) -> dict[str, Any]:
    """The ``extra`` of a log line about a job: action, job id, task and attempt."""
    return {"action": action, "job_id": d.job_id, "task": d.name, "attempt": d.attempts}


class _Backoff:
    """Exponential backoff for a broker outage, with clear log lines and no busy loop."""

    def __init__(self, first: float = 0.1, limit: float = 5.0) -> None:
        self.first = first
        self.limit = limit
        self.delay = first
        self.failing = False

    def reset(self) -> None:
        if self.failing:
            log.info("broker reachable again; resuming", extra={"action": "broker_back"})
        self.failing = False
        self.delay = self.first

    async def wait(self, exc: Exception, stopping: asyncio.Event) -> None:
        log.warning(
            "broker unavailable (%s); retrying in %.1fs",
            exc,
            self.delay,
            extra={"action": "broker_unavailable"},
        )
        self.failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), self.delay * random.uniform(0.8, 1.2))
        self.delay = min(self.limit, self.delay * 2)
