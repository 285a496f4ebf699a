"""The scheduler loop: one leader fires every schedule's ticks as ordinary jobs.

Any number of schedulers may run (``offload worker --scheduler``, ``offload scheduler``);
they compete for one named broker lease and the holder fires the ticks. Exactly-once does
not rest on the lease: each tick is a job whose id is derived from the schedule and the
tick's time, so a second enqueue of the same tick (a split-brain moment, a re-run after a
crash) is a ``duplicate`` the broker refuses. The lease only keeps the work in one place.

* The leader renews the lease every ``lease_s / 3`` and stops acting as leader as soon
  as a renewal is due and fails, well before the lease expires.
* A follower tries to take the lease every ``poll_s`` (default ``lease_s / 5``), so a
  dead leader is replaced at most ``lease_s + poll_s`` after its last renewal.
* Per schedule, the broker's key-value store holds how far its ticks are handled
  (``through``) and the last tick fired. A new leader reads it and resumes from there:
  what happened while no scheduler ran is the schedule's misfire policy
  (:mod:`offload.schedules`).

:meth:`Scheduler.step` is one iteration (lead, fire what is due, say when to wake) and
takes its time from the injected clock, so tests drive it with a ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

from offload.clock import Clock, system_clock
from offload.errors import BrokerUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers.base import Broker, EnqueueRequest

__all__ = [
    "Due",
    "Plan",
    "ScheduleState",
    "Scheduler",
    "SchedulerOptions",
    "StepResult",
    "lease_name",
    "state_key",
]

log = logging.getLogger("offload.scheduler")


class ScheduleState(msgspec.Struct, kw_only=True):
    """What the broker keeps per schedule.

    Attributes:
        through: every tick at or before this instant is handled (fired or skipped).
        last_tick: the last tick fired, if any.
        skipped: ticks skipped as missed, in total.
    """

    through: float
    last_tick: float | None = None
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Due:
    """What a schedule has to do now: ``ticks`` to fire, and how many were ``skipped``."""

    ticks: list[float]
    skipped: int = 0


class Plan(Protocol):
    """A schedule as the scheduler sees it (built by :mod:`offload.schedules`)."""

    @property
    def name(self) -> str:
        """The schedule's unique name."""

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""

    def due(self, through: float, now: float) -> Due:
        """The ticks in ``(through, now]`` to fire, after the misfire policy."""

    def requests(self, ticks: Sequence[float]) -> list[EnqueueRequest]:
        """The jobs for these ticks (deterministic ids, no queue bound)."""


def state_key(schedule: str) -> str:
    """The key-value key of a schedule's :class:`ScheduleState`."""
    return f"offload:schedule:{schedule}"


def lease_name(schedules: Sequence[str]) -> str:
    """The lease the schedulers of one set of schedules compete for.

    Derived from the schedule names, so apps with different schedules that share a broker
    never block each other. During a rolling deploy that changes the set, old and new
    schedulers each lead their own set; the common ticks still fire once (by their ids).
    """
    digest = hashlib.sha256("\n".join(sorted(schedules)).encode()).hexdigest()[:12]
    return f"offload:scheduler:{digest}"


@dataclass(frozen=True)
class SchedulerOptions:
    """How a scheduler runs.

    Attributes:
        lease_s: the leader lease; a dead leader is replaced within about this long.
        poll_s: how often a follower tries to take the lease (default ``lease_s / 5``).
        max_batch: most tick jobs enqueued in one call.
        state_ttl_s: how long an idle schedule's state is kept in the broker.
    """

    lease_s: float = 10.0
    poll_s: float | None = None
    max_batch: int = 1000
    state_ttl_s: float = 90 * 86_400.0

    def __post_init__(self) -> None:
        if self.lease_s <= 0:
            raise ValueError("lease_s must be positive")


@dataclass
class StepResult:
    """What one :meth:`Scheduler.step` did.

    Attributes:
        leader: this scheduler held the lease.
        fired: ids of the tick jobs enqueued (or found already enqueued).
        skipped: missed ticks dropped by a ``skip`` policy.
        wake_at: the clock time of the next useful step.
    """

    leader: bool
    fired: list[str] = field(default_factory=list)
    skipped: int = 0
    wake_at: float = 0.0


class Scheduler:
    """Fires the ticks of ``plans`` while it leads; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        plans: Sequence[Plan],
        *,
        clock: Clock = system_clock,
        options: SchedulerOptions | None = None,
        owner: str | None = None,
    ) -> None:
        self.broker = broker
        self.plans = list(plans)
        self.clock = clock
        self.options = opts = options or SchedulerOptions()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = lease_name([p.name for p in self.plans])
        self._poll_s = opts.poll_s or opts.lease_s / 5
        self._leader = False
        self._renew_at = 0.0
        self._states: dict[str, ScheduleState] = {}

    @property
    def leader(self) -> bool:
        """True while this scheduler holds the lease (as of its last step)."""
        return self._leader

    # ------------------------------------------------------------------ one step

    async def step(self) -> StepResult:
        """Lead if possible; if leading, fire every due tick. Never sleeps."""
        now = self.clock.now()
        if not await self._lead(now):
            return StepResult(leader=False, wake_at=now + self._poll_s)
        result = StepResult(leader=True)
        requests: list[EnqueueRequest] = []
        changed: dict[str, ScheduleState] = {}
        for plan in self.plans:
            state = self._states[plan.name]
            due = plan.due(state.through, now)
            if not due.ticks and not due.skipped:
                continue
            requests += plan.requests(due.ticks)
            last = due.ticks[-1] if due.ticks else state.last_tick
            changed[plan.name] = ScheduleState(
                through=now, last_tick=last, skipped=state.skipped + due.skipped
            )
            result.skipped += due.skipped
            if due.skipped:
                log.warning(
                    "schedule %s missed %d tick(s) while no scheduler ran; skipped them",
                    plan.name,
                    due.skipped,
                    extra={"action": "ticks_skipped", "schedule": plan.name},
                )
        result.fired = await self._enqueue(requests)
        await self._save(changed)
        result.wake_at = self._wake_at(now)
        return result

    async def _lead(self, now: float) -> bool:
        if self._leader and now < self._renew_at:
            return True
        try:
            held = await self.broker.acquire_lease(self.lease, self.owner, self.options.lease_s)
        except BrokerUnavailable as exc:
            log.warning("scheduler cannot reach the broker (%s); not firing ticks", exc)
            held = False
        if held and not self._leader:
            await self._load(now)
            log.info(
                "scheduler %s leads %d schedule(s)",
                self.owner,
                len(self.plans),
                extra={"action": "scheduler_leading", "lease": self.lease, "owner": self.owner},
            )
        elif not held and self._leader:
            log.warning("scheduler %s lost the lead", self.owner, extra={"action": "lead_lost"})
        self._leader = held
        self._renew_at = now + self.options.lease_s / 3
        return held

    async def _load(self, now: float) -> None:
        """Read every schedule's state; a schedule never seen starts now."""
        self._states = {}
        fresh: dict[str, ScheduleState] = {}
        for plan in self.plans:
            raw = await self.broker.kv_get(state_key(plan.name))
            if raw is None:
                fresh[plan.name] = self._states[plan.name] = ScheduleState(through=now)
            else:
                self._states[plan.name] = msgspec.json.decode(raw, type=ScheduleState)
        await self._save(fresh)

    async def _enqueue(self, requests: list[EnqueueRequest]) -> list[str]:
        fired: list[str] = []
        size = self.options.max_batch
        for i in range(0, len(requests), size):
            outcomes = await self.broker.enqueue(requests[i : i + size])
            fired += [o.job_id for o in outcomes]
        if fired:
            log.info(
                "fired %d tick(s)", len(fired), extra={"action": "ticks_fired", "jobs": fired[:20]}
            )
        return fired

    async def _save(self, changed: dict[str, ScheduleState]) -> None:
        ttl = self.options.state_ttl_s
        for name, state in changed.items():
            await self.broker.kv_set(state_key(name), msgspec.json.encode(state), ttl_s=ttl)
            self._states[name] = state

    def _wake_at(self, now: float) -> float:
        wake = self._renew_at
        for plan in self.plans:
            wake = min(wake, plan.next_after(max(now, self._states[plan.name].through)))
        return wake

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Step forever, sleeping (on the clock) until the next useful step.

        Returns only when cancelled; a leader then gives its lease up, so a standby
        takes over at its next poll instead of waiting for the lease to expire.
        """
        me = asyncio.current_task()
        try:
            while True:
                wake_at = await self._guarded_step()
                if me is not None and me.cancelling():
                    # A driver swallowed our cancellation (asyncio.wait_for on 3.11 can
                    # lose one that races with a result): honour it anyway.
                    raise asyncio.CancelledError
                await self.clock.sleep(
                    min(self._poll_s * 5, max(0.001, wake_at - self.clock.now()))
                )
        finally:
            if self._leader:
                self._leader = False
                with contextlib.suppress(Exception):
                    await self.broker.release_lease(self.lease, self.owner)

    async def _guarded_step(self) -> float:
        """One step; on a broker outage, follow and retry after a poll interval."""
        try:
            return (await self.step()).wake_at
        except BrokerUnavailable as exc:
            log.warning("scheduler step failed, broker unavailable: %s", exc)
            self._leader = False
            return self.clock.now() + self._poll_s
