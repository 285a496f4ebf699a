"""Schedules: ``@app.cron`` and ``@app.every``, as pure functions of time.

::

    @app.cron("*/5 * * * *", tz="Europe/Berlin")
    async def aggregate_sales() -> None: ...

    @app.every(seconds=30, jitter=5)
    async def refresh_cache() -> None: ...

Each decorator registers a task and a :class:`Schedule`. A scheduler
(:mod:`offload.worker.scheduler`) turns each tick into an ordinary job whose id is
``tick:<schedule>:<UTC time>``, so a tick can exist only once.

Time zones and daylight saving time (cron only; ``every`` counts real seconds):

* A cron expression is read in its time zone's wall-clock time.
* A wall-clock time that does not exist (the hour skipped when clocks go forward) is
  **shifted forward by the length of the gap**: ``30 2 * * *`` in Europe/Berlin fires at
  03:30 on the spring day, so a daily job still runs that day. If the shifted time is
  also a tick of its own, it fires once.
* A wall-clock time that occurs twice (the hour repeated when clocks go back) fires
  **once, at its first occurrence**. ``*/5 * * * *`` therefore pauses for the repeated
  hour; use ``tz="UTC"`` or ``@app.every`` for strictly periodic work.

Missed ticks: a tick is *on time* while it is at most ``grace`` seconds old (60 s by
default, enough for a standby scheduler to take over), and such ticks always fire, late
if need be. Older ticks were missed because no scheduler ran; the policy decides:
``misfire="skip"`` (default) drops them, ``misfire="catch_up"`` fires the most recent
``max_catch_up`` of them, oldest first.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from offload.errors import ConfigurationError
from offload.specs import BindError
from offload.worker.scheduler import Due, ScheduleState, state_key

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from offload.app import App
    from offload.brokers.base import EnqueueRequest
    from offload.tasks import Task

__all__ = [
    "Cron",
    "Every",
    "Misfire",
    "Schedule",
    "ScheduleInfo",
    "Trigger",
    "add_schedule",
    "jitter_for",
    "schedule_infos",
    "tick_id",
]

Misfire = Literal["skip", "catch_up"]

_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,200}")

#: More than any UTC offset change (DST shifts are at most 2 h anywhere).
_DST_MARGIN_S = 3 * 3600.0


class Trigger(Protocol):
    """When a schedule fires."""

    def next_after(self, t: float) -> float:
        """The first fire time strictly after ``t`` (Unix seconds)."""

    def window_start(self, t: float, n: int) -> float:
        """An instant at or before the ``n``-th fire time before ``t`` (may be earlier)."""

    def describe(self) -> str:
        """A short human description, e.g. ``cron */5 * * * * (Europe/Berlin)``."""


# --------------------------------------------------------------------------- cron


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"Unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin' "
            "(install the tzdata package where the system has no zone database)."
        ) from exc


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """Unix time of a naive wall-clock time: the first occurrence of a repeated time,
    and a skipped time shifted forward by the gap (PEP 495 ``fold=0``)."""
    return wall.replace(tzinfo=zone, fold=0).timestamp()


def _offset(zone: ZoneInfo, t: float) -> timedelta | None:
    return datetime.fromtimestamp(t, zone).utcoffset()


def _exists(wall: datetime, zone: ZoneInfo, instant: float) -> bool:
    return datetime.fromtimestamp(instant, zone).replace(tzinfo=None) == wall


@dataclass(frozen=True)
class Cron:
    """A cron expression in a time zone (5 fields, or 6 with seconds last, as croniter).

    Raises:
        ConfigurationError: the expression or the time zone is not valid.
    """

    expr: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        _zone(self.tz)
        try:
            croniter(self.expr)
            self.next_after(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
        except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
            raise ConfigurationError(
                f"Invalid cron expression {self.expr!r} ({exc}): write five fields, "
                "'minute hour day-of-month month day-of-week', e.g. '*/5 * * * *'."
            ) from exc

    def next_after(self, t: float) -> float:
        """The first fire time strictly after ``t`` (see the module docstring for DST)."""
        zone = _zone(self.tz)
        start = t
        if _offset(zone, t) != _offset(zone, t - _DST_MARGIN_S):
            # Just after a clock change, a skipped time shifted forward may fire after t
            # though its wall time is before wall(t): start reading from before the change.
            start = t - _DST_MARGIN_S
        # croniter rounds a fractional start up to the next second, which would skip a
        # tick at that second: start from the whole second at or before.
        wall_start = datetime.fromtimestamp(math.floor(start), zone).replace(tzinfo=None)
        it = croniter(self.expr, wall_start)
        while True:
            wall: datetime = it.get_next(datetime)
            instant = _instant(wall, zone)
            if instant <= t:
                continue  # a repeated hour's second pass: its times already fired
            if _exists(wall, zone, instant):
                return instant
            return self._earliest_past_gap(it, wall, instant, t, zone)

    @staticmethod
    def _earliest_past_gap(
        it: croniter, wall: datetime, instant: float, t: float, zone: ZoneInfo
    ) -> float:
        # A shifted time may land after genuine ticks just past the gap: take the earliest.
        shifted_wall = datetime.fromtimestamp(instant, zone).replace(tzinfo=None)
        best = instant
        while (nxt := it.get_next(datetime)) < shifted_wall:
            candidate = _instant(nxt, zone)
            if t < candidate < best:
                best = candidate
        return best

    def window_start(self, t: float, n: int) -> float:
        """An instant at or before the ``n``-th fire time before ``t``."""
        zone = _zone(self.tz)
        wall = datetime.fromtimestamp(math.ceil(t), zone).replace(tzinfo=None)
        it = croniter(self.expr, wall)
        for _ in range(n + 1):
            wall = it.get_prev(datetime)
        return _instant(wall, zone) - _DST_MARGIN_S

    def describe(self) -> str:
        """``cron EXPR (TZ)``."""
        return f"cron {self.expr} ({self.tz})"


# --------------------------------------------------------------------------- every


@dataclass(frozen=True)
class Every:
    """Every ``interval_s`` seconds, on multiples of the interval since ``anchor``.

    Ticks are aligned (every 30 s fires at :00 and :30), so every scheduler computes the
    same tick times with no shared state.
    """

    interval_s: float
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or math.isinf(self.interval_s):
            raise ConfigurationError(
                f"every() needs a positive interval, got {self.interval_s!r} seconds."
            )

    def next_after(self, t: float) -> float:
        """The first multiple of the interval (from ``anchor``) strictly after ``t``."""
        k = math.floor((t - self.anchor) / self.interval_s) + 1
        tick = round(self.anchor + k * self.interval_s, 6)
        return tick if tick > t else round(tick + self.interval_s, 6)

    def window_start(self, t: float, n: int) -> float:
        """``n + 1`` intervals before ``t``."""
        return t - (n + 1) * self.interval_s

    def describe(self) -> str:
        """``every 30s``, ``every 1:30:00``."""
        if self.interval_s < 60:
            return f"every {self.interval_s:g}s"
        return f"every {timedelta(seconds=self.interval_s)}"


# --------------------------------------------------------------------------- schedules


def tick_id(schedule: str, tick: float) -> str:
    """The job id of one tick: ``tick:<schedule>:<UTC ISO time>``."""
    moment = datetime.fromtimestamp(round(tick, 3), UTC)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return f"tick:{schedule}:{moment.replace(tzinfo=None).isoformat(timespec=spec)}Z"


def jitter_for(schedule: str, tick: float, jitter_s: float) -> float:
    """A delay in ``[0, jitter_s)`` that every scheduler computes alike for one tick."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(tick_id(schedule, tick).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter_s


@dataclass(frozen=True)
class Schedule:
    """One schedule: which task to enqueue, when, and what to do about missed ticks.

    Attributes:
        name: unique among the app's schedules (default: the task name).
        task: the task enqueued at each tick.
        trigger: a :class:`Cron` or an :class:`Every`.
        args, kwargs: the arguments of each tick's job.
        jitter_s: each tick's job starts up to this much later (spreads load).
        misfire: ``skip`` or ``catch_up`` (see the module docstring).
        max_catch_up: with ``catch_up``, the most missed ticks fired at once.
        grace_s: how late a tick may fire and still count as on time.
    """

    name: str
    task: str
    trigger: Cron | Every
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    jitter_s: float = 0.0
    misfire: Misfire = "skip"
    max_catch_up: int = 10
    grace_s: float = 60.0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"Invalid schedule name {self.name!r}: use 1..200 characters from letters, "
                "digits and _ . : - @"
            )
        if self.misfire not in ("skip", "catch_up"):
            raise ConfigurationError(f"misfire must be 'skip' or 'catch_up', not {self.misfire!r}.")
        if self.max_catch_up < 0 or self.grace_s < 0 or self.jitter_s < 0:
            raise ConfigurationError("max_catch_up, grace and jitter must not be negative.")

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""
        return self.trigger.next_after(t)

    def ticks(self, after: float, until: float, limit: int = 100_000) -> list[float]:
        """Ticks in ``(after, until]``, oldest first, at most ``limit`` (the newest)."""
        out: deque[float] = deque(maxlen=limit)
        t = self.trigger.next_after(after)
        while t <= until:
            out.append(t)
            t = self.trigger.next_after(t)
        return list(out)

    def due(self, through: float, now: float) -> Due:
        """The ticks in ``(through, now]`` to fire now, after the misfire policy."""
        late = now - self.grace_s
        if through >= late:
            return Due(self.ticks(through, now))
        if self.misfire == "catch_up" and self.max_catch_up > 0:
            start = max(through, self.trigger.window_start(late, self.max_catch_up))
            caught = self.ticks(start, late, self.max_catch_up)
        else:
            caught = []
        missed = self._count(through, late) - len(caught)
        return Due(caught + self.ticks(late, now), skipped=missed)

    def _count(self, after: float, until: float, cap: int = 10_000) -> int:
        n = 0
        t = self.trigger.next_after(after)
        while t <= until and n < cap:
            n += 1
            t = self.trigger.next_after(t)
        return n

    def describe(self) -> str:
        """The trigger in words, with the jitter."""
        text = self.trigger.describe()
        return f"{text} ±{self.jitter_s:g}s" if self.jitter_s else text


def add_schedule(
    schedules: dict[str, Schedule],
    task: Task[Any, Any],
    trigger: Cron | Every,
    *,
    name: str | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    jitter: float,
    misfire: Misfire,
    max_catch_up: int,
    grace: float,
) -> Schedule:
    """Add a schedule of ``task`` to ``schedules`` (``@app.cron``/``@app.every``).

    Raises:
        ConfigurationError: the name is taken, or the arguments do not fit the task.
    """
    sched = Schedule(
        name=name or task.name,
        task=task.name,
        trigger=trigger,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        jitter_s=jitter,
        misfire=misfire,
        max_catch_up=max_catch_up,
        grace_s=grace,
    )
    if sched.name in schedules:
        raise ConfigurationError(
            f"A schedule named {sched.name!r} already exists: pass schedule_name=... to "
            "give a task a second schedule."
        )
    try:
        task.spec.binder.bind(list(sched.args), dict(sched.kwargs))
    except BindError as exc:
        raise ConfigurationError(
            f"Schedule {sched.name!r}: its arguments do not fit {task.name}: {exc}"
        ) from exc
    schedules[sched.name] = sched
    return sched


class ScheduleInfo(msgspec.Struct, kw_only=True):
    """A schedule as the CLI and the dashboard show it.

    Attributes:
        name, task, queue: what runs, and where.
        trigger: the trigger in words (``cron */5 * * * * (Europe/Berlin)``, ``every 0:00:30``).
        misfire, max_catch_up, grace_s: the missed-tick policy.
        last_tick: the last tick fired (Unix seconds), ``None`` if never.
        last_job_id: that tick's job id (look it up for its state and result).
        next_tick: the next tick from now.
        skipped: ticks skipped as missed, in total.
    """

    name: str
    task: str
    queue: str
    trigger: str
    misfire: Misfire
    max_catch_up: int
    grace_s: float
    last_tick: float | None
    last_job_id: str | None
    next_tick: float
    skipped: int = 0


async def schedule_infos(app: App, now: float | None = None) -> list[ScheduleInfo]:
    """Every schedule of ``app`` with its last and next tick, read from the broker."""
    broker = await app.broker()
    now = app.clock.now() if now is None else now
    out: list[ScheduleInfo] = []
    for sched in sorted(app.schedules.values(), key=lambda s: s.name):
        raw = await broker.kv_get(state_key(sched.name))
        state = None if raw is None else msgspec.json.decode(raw, type=ScheduleState)
        last = None if state is None else state.last_tick
        out.append(
            ScheduleInfo(
                name=sched.name,
                task=sched.task,
                queue=app.tasks[sched.task].spec.queue,
                trigger=sched.describe(),
                misfire=sched.misfire,
                max_catch_up=sched.max_catch_up,
                grace_s=sched.grace_s,
                last_tick=last,
                last_job_id=None if last is None else tick_id(sched.name, last),
                next_tick=sched.next_after(now),
                skipped=0 if state is None else state.skipped,
            )
        )
    return out


class BoundSchedule:
    """A :class:`Schedule` with its app: what the scheduler loop runs (a ``Plan``)."""

    def __init__(self, app: App, schedule: Schedule) -> None:
        self.app = app
        self.schedule = schedule

    @property
    def name(self) -> str:
        """The schedule's name."""
        return self.schedule.name

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""
        return self.schedule.next_after(t)

    def due(self, through: float, now: float) -> Due:
        """See :meth:`Schedule.due`."""
        return self.schedule.due(through, now)

    def requests(self, ticks: Sequence[float]) -> list[EnqueueRequest]:
        """One job per tick, id ``tick:<schedule>:<time>``, never refused by a bound."""
        sched = self.schedule
        task = self.app.tasks[sched.task]
        out = []
        for tick in ticks:
            tid = tick_id(sched.name, tick)
            req = self.app._request(
                task,
                list(sched.args),
                dict(sched.kwargs),
                {
                    "job_id": tid,
                    "eta": tick + jitter_for(sched.name, tick, sched.jitter_s),
                    "headers": {"offload-schedule": sched.name, "offload-tick": tid},
                },
            )
            req.max_depth = None
            out.append(req)
        return out
