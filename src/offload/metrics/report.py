"""The typed results of Little's-Law analytics (plain msgspec Structs, JSON-ready).

A :class:`StatsReport` holds one :class:`FlowStats` per queue and per task, measured over
a sliding window; each number's meaning is in ``docs/back-pressure.md`` and below.
``msgspec.json.encode(report)`` gives the JSON the dashboard and ``offload stats --json``
show.
"""

from __future__ import annotations

import msgspec

__all__ = ["FlowStats", "Percentiles", "Prediction", "Predictions", "StatsReport"]


class Percentiles(msgspec.Struct, frozen=True, kw_only=True):
    """A distribution of durations (seconds) over the jobs that finished in the window.

    Fields are ``None`` when no job finished. ``count`` is how many jobs the
    percentiles come from (at most the analytics' ``max_timings`` most recent).
    """

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """A predicted number with the model it comes from.

    Attributes:
        value: the number, or ``None`` when it cannot be predicted.
        assumes: the assumptions behind it, in words, with the inputs used.
        unavailable: why ``value`` is ``None`` (empty when there is a value).
    """

    value: float | None
    assumes: str
    unavailable: str = ""


class Predictions(msgspec.Struct, frozen=True, kw_only=True):
    """What the measurements predict for one queue (or one task).

    Attributes:
        drain_s: seconds until the jobs now waiting or running are done, while new
            ones keep arriving at λ (fluid model: the backlog shrinks at c/S - λ).
        wait_now_s: expected wait before a job enqueued now starts (FIFO behind the
            jobs now queued, exponential service on c slots).
        steady_wait_s: mean wait in steady state at today's λ, S and c (M/M/c, Erlang C).
        slots_needed: the fewest slots that keep the steady-state mean wait under
            ``target_wait_s`` (M/M/c, Erlang C).
        target_wait_s: the target ``slots_needed`` was computed for.
    """

    drain_s: Prediction
    wait_now_s: Prediction
    steady_wait_s: Prediction
    slots_needed: Prediction
    target_wait_s: float


class FlowStats(msgspec.Struct, frozen=True, kw_only=True):
    """Little's-Law measurements of one queue or one task over the window.

    Rates are per second; durations in seconds; ``None`` means "not measurable in this
    window" (e.g. no job finished, so there is no mean time in system).

    Attributes:
        name: the queue or task name.
        kind: ``queue`` or ``task``.
        window_s: the span the rates and averages cover.
        arrival_rate: λ, jobs enqueued per second.
        completion_rate: X, jobs reaching a final state per second.
        jobs_in_system: L, the time-averaged number of jobs waiting or running.
        time_in_system_s: W, mean seconds from enqueue to final state, over the jobs
            that finished in the window.
        little_lw: λ·W, what Little's Law says L should be.
        little_error: (L - λ·W) / L; near 0 in a steady window, large when the window
            is too short or the load changed within it.
        mean_wait_s: mean seconds from due to first start (first attempts started).
        mean_service_s: S, mean seconds per attempt (attempts with an outcome).
        wait, service, time_in_system: percentiles over the jobs that finished in the
            last ``window_s`` asked for (read from the jobs' timestamps, so available
            even before the sampled history covers the window).
        busy_slots: time-averaged slots busy with these jobs (X_attempts · S).
        slots: worker slots that serve it (every live worker's concurrency that lists
            the queue; a worker serving several queues counts for each).
        utilisation: busy_slots / slots.
        enqueued, finished: jobs that arrived and finished within the window.
        in_system: jobs enqueued and not yet final, now.
        pending, running: jobs waiting (scheduled, queued, blocked, retrying) and
            running now (queues only).
        oldest_pending_age_s: how long the oldest pending job has existed (queues only).
        predictions: what these numbers predict (see :class:`Predictions`).
    """

    name: str
    kind: str
    window_s: float
    arrival_rate: float | None
    completion_rate: float | None
    jobs_in_system: float | None
    time_in_system_s: float | None
    little_lw: float | None
    little_error: float | None
    mean_wait_s: float | None
    mean_service_s: float | None
    wait: Percentiles
    service: Percentiles
    time_in_system: Percentiles
    busy_slots: float | None
    slots: int
    utilisation: float | None
    enqueued: int
    finished: int
    in_system: int
    pending: int | None = None
    running: int | None = None
    oldest_pending_age_s: float | None = None
    predictions: Predictions | None = None


class StatsReport(msgspec.Struct, frozen=True, kw_only=True):
    """Analytics for every queue and task, at one instant.

    Attributes:
        at: when it was measured (the broker's clock, Unix seconds).
        window_s: the span actually covered (at most the window asked for; shorter
            while the analytics have not been sampling that long).
        queues: one entry per queue, sorted by name.
        tasks: one entry per task name, sorted by name.
        workers: live workers.
        slots: their total concurrency.
    """

    at: float
    window_s: float
    queues: list[FlowStats]
    tasks: list[FlowStats]
    workers: int
    slots: int

    def queue(self, name: str) -> FlowStats | None:
        """The entry of one queue, or ``None``."""
        return next((q for q in self.queues if q.name == name), None)

    def task(self, name: str) -> FlowStats | None:
        """The entry of one task, or ``None``."""
        return next((t for t in self.tasks if t.name == name), None)
