"""Little's-Law analytics: λ, X, L, W per queue and per task over a sliding window.

Every broker keeps cumulative :class:`~offload.brokers.base.Counters` per queue and task
(arrivals, completions, summed waits, service and time in system, and the area under the
jobs-in-system curve). :class:`Analytics` samples ``broker.stats()`` and differences two
samples ``window_s`` apart:

* λ (arrival rate) = Δenqueued / Δt;   X (completion rate) = Δfinished / Δt;
* L (jobs in system, time-averaged) = Δ∫L dt / Δt, exact, not sampled;
* W (mean time in system) = Δ(summed time in system) / Δfinished;
* Little's Law says L = λ·W over any window long enough for the start and end effects
  to vanish; the report shows both and their relative difference.

Percentiles come from the finished jobs' timestamps (``broker.timings``); utilisation from
the summed service time and the live workers' slots. Predictions (drain time, wait for a
job enqueued now, slots for a target wait) use the M/M/c model of
:mod:`offload.metrics.queueing`, each stated with its assumptions. See
``docs/back-pressure.md``.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from offload.brokers.base import Counters, QueueStats, StateCounts
from offload.metrics.queueing import mmc, slots_for_wait
from offload.metrics.report import FlowStats, Percentiles, Prediction, Predictions, StatsReport

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from offload.brokers.base import Broker, Timing, WorkerInfo

__all__ = [
    "Analytics",
    "Sample",
    "Window",
    "build_report",
    "completion_rate",
    "percentiles",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """One ``broker.stats()`` snapshot of every queue, at the broker's ``at``."""

    at: float
    queues: Mapping[str, QueueStats]


@dataclass(frozen=True, slots=True)
class Window:
    """The change of one flow's counters between two samples.

    Attributes:
        span: seconds between the samples.
        delta: counter differences (a counter that went backwards, as after a store
            was wiped, counts from zero).
        area: job-seconds spent in the system within the window (∫L dt).
        now: the counters at the end of the window.
    """

    span: float
    delta: Counters
    area: float
    now: Counters

    @classmethod
    def between(cls, base: Counters | None, now: Counters, base_at: float, now_at: float) -> Window:
        """The window from ``base`` (``None``: the flow did not exist yet) to ``now``."""
        if base is None or now.enqueued < base.enqueued or now.finished < base.finished:
            base = Counters()
            area_before = 0.0
        else:
            area_before = base.area(base_at)
        fields = now.__struct_fields__
        delta = Counters(**{f: getattr(now, f) - getattr(base, f) for f in fields})
        return cls(now_at - base_at, delta, now.area(now_at) - area_before, now)


@dataclass(slots=True)
class _Durations:
    wait: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    system: list[float] = field(default_factory=list)

    def add(self, t: Timing) -> None:
        self.wait.append(max(0.0, t.started_at - t.run_at))
        self.service.append(max(0.0, t.finished_at - t.started_at))
        self.system.append(max(0.0, t.finished_at - t.enqueued_at))


def percentiles(values: Sequence[float]) -> Percentiles:
    """Mean, p50, p95 and p99 (linear interpolation between closest ranks)."""
    if not values:
        return Percentiles()
    ordered = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return Percentiles(
        count=len(ordered),
        mean=sum(ordered) / len(ordered),
        p50=at(0.50),
        p95=at(0.95),
        p99=at(0.99),
    )


def completion_rate(timings: Sequence[Timing], now: float, min_jobs: int = 5) -> float | None:
    """Jobs finished per second, from the most recent finished jobs' timestamps.

    ``n`` completions over the time from the oldest of them to ``now``: a queue that has
    stopped completing shows a falling rate at once. ``None`` with fewer than
    ``min_jobs`` completions (too few to measure).
    """
    if len(timings) < max(1, min_jobs):
        return None
    oldest = min(t.finished_at for t in timings)
    return len(timings) / max(now - oldest, 1e-3)


# --------------------------------------------------------------------------- computing


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _attempts(c: Counters) -> int:
    # Attempts that reported an outcome; cancellations are left out because most never ran.
    return c.succeeded + c.dead + c.retried


def _service_s(w: Window) -> tuple[float | None, str]:
    """Mean service time S, from the window, else from all-time counters."""
    s = _ratio(w.delta.service_s, _attempts(w.delta))
    if s is not None and s > 0:
        return s, "measured"
    s = _ratio(w.now.service_s, _attempts(w.now))
    if s is not None and s > 0:
        return s, "all-time mean, none ended in the window"
    return None, ""


@dataclass(frozen=True, slots=True)
class _Flow:
    """What one flow's stats are computed from."""

    name: str
    kind: str
    window: Window
    durations: _Durations
    slots: int
    counts: StateCounts | None = None
    oldest_pending_at: float | None = None


def flow_stats(flow: _Flow, at: float, target_wait_s: float) -> FlowStats:
    """One :class:`FlowStats` from a window of counters and the finished jobs' timings."""
    w, d = flow.window, flow.window.delta
    lam = _ratio(d.enqueued, w.span)
    mean_l = _ratio(w.area, w.span)
    time_in_system = _ratio(d.system_s, d.finished)
    lw = lam * time_in_system if lam is not None and time_in_system is not None else None
    busy = _ratio(d.service_s, w.span)
    service_s, s_source = _service_s(w)
    counts = flow.counts
    return FlowStats(
        name=flow.name,
        kind=flow.kind,
        window_s=w.span,
        arrival_rate=lam,
        completion_rate=_ratio(d.finished, w.span),
        jobs_in_system=mean_l,
        time_in_system_s=time_in_system,
        little_lw=lw,
        little_error=(mean_l - lw) / mean_l if mean_l and lw is not None else None,
        mean_wait_s=_ratio(d.wait_s, d.waited),
        mean_service_s=_ratio(d.service_s, _attempts(d)),
        wait=percentiles(flow.durations.wait),
        service=percentiles(flow.durations.service),
        time_in_system=percentiles(flow.durations.system),
        busy_slots=busy,
        slots=flow.slots,
        utilisation=_ratio(busy, flow.slots) if busy is not None else None,
        enqueued=d.enqueued,
        finished=d.finished,
        in_system=w.now.in_system,
        pending=counts.pending if counts else None,
        running=counts.running if counts else None,
        oldest_pending_age_s=(
            max(0.0, at - flow.oldest_pending_at) if flow.oldest_pending_at is not None else None
        ),
        predictions=predict(lam or 0.0, service_s, s_source, flow.slots, counts, target_wait_s),
    )


# --------------------------------------------------------------------------- predictions


def predict(
    lam: float,
    service_s: float | None,
    s_source: str,
    slots: int,
    counts: StateCounts | None,
    target_wait_s: float,
) -> Predictions:
    """Drain time, wait for a job enqueued now, steady-state wait and slots needed."""
    if service_s is None:
        none = Prediction(value=None, assumes="", unavailable="no attempt has finished yet")
        return Predictions(
            drain_s=none,
            wait_now_s=none,
            steady_wait_s=none,
            slots_needed=none,
            target_wait_s=target_wait_s,
        )
    inputs = f"λ={lam:.4g}/s, S={service_s:.4g}s ({s_source}), c={slots}"
    return Predictions(
        drain_s=_drain(lam, service_s, slots, counts, inputs),
        wait_now_s=_wait_now(service_s, slots, counts, inputs),
        steady_wait_s=_steady_wait(lam, service_s, slots, inputs),
        slots_needed=_slots_needed(lam, service_s, target_wait_s, inputs),
        target_wait_s=target_wait_s,
    )


def _no_slots(assumes: str, slots: int, counts: StateCounts | None) -> Prediction | None:
    if counts is None:
        return Prediction(value=None, assumes=assumes, unavailable="computed per queue only")
    if slots <= 0:
        return Prediction(
            value=None, assumes=assumes, unavailable="no live worker serves this queue"
        )
    return None


def _drain(
    lam: float, service_s: float, slots: int, counts: StateCounts | None, inputs: str
) -> Prediction:
    assumes = (
        f"fluid model: the {_backlog(counts)} jobs queued or running shrink at the spare "
        f"capacity c/S - λ while arrivals continue at λ; {inputs}"
    )
    missing = _no_slots(assumes, slots, counts)
    if missing is not None:
        return missing
    spare = slots / service_s - lam
    backlog = _backlog(counts)
    if backlog == 0:
        return Prediction(value=0.0, assumes=assumes)
    if spare <= 0:
        return Prediction(
            value=None,
            assumes=assumes,
            unavailable=f"arrivals meet or exceed capacity ({slots / service_s:.4g}/s): "
            "the backlog does not shrink",
        )
    return Prediction(value=backlog / spare, assumes=assumes)


def _backlog(counts: StateCounts | None) -> int:
    return 0 if counts is None else counts.queued + counts.running


def _wait_now(service_s: float, slots: int, counts: StateCounts | None, inputs: str) -> Prediction:
    assumes = (
        "FIFO behind the jobs queued now, every slot serving this queue, exponential "
        f"service (memoryless), no later job of higher priority; {inputs}"
    )
    missing = _no_slots(assumes, slots, counts)
    if missing is not None or counts is None:
        return missing or Prediction(value=None, assumes=assumes)
    ahead = counts.queued + counts.running
    if ahead < slots:
        return Prediction(value=0.0, assumes=assumes)
    # Memoryless service: each of the c busy slots frees at rate 1/S, so the job starts
    # after (ahead - c + 1) completions, each taking S/c on average.
    return Prediction(value=(ahead - slots + 1) * service_s / slots, assumes=assumes)


def _steady_wait(lam: float, service_s: float, slots: int, inputs: str) -> Prediction:
    assumes = f"M/M/c steady state (Poisson arrivals, exponential service, FIFO); {inputs}"
    if slots <= 0:
        return Prediction(value=None, assumes=assumes, unavailable="no live worker serves it")
    state = mmc(lam, service_s, slots)
    if state is None:
        return Prediction(
            value=None,
            assumes=assumes,
            unavailable=f"utilisation λS/c = {lam * service_s / slots:.2f} >= 1: "
            "no steady state, the queue grows",
        )
    return Prediction(value=state.wait_s, assumes=assumes)


def _slots_needed(lam: float, service_s: float, target_wait_s: float, inputs: str) -> Prediction:
    assumes = (
        f"M/M/c (Erlang C): the fewest slots with a mean wait under {target_wait_s:g}s; "
        f"Poisson arrivals, exponential service, FIFO; {inputs}"
    )
    needed = slots_for_wait(lam, service_s, target_wait_s)
    if needed is None:
        return Prediction(value=None, assumes=assumes, unavailable="more than 100,000 slots")
    return Prediction(value=float(needed), assumes=assumes)


# --------------------------------------------------------------------------- the report


def _slots_by_queue(workers: Iterable[WorkerInfo]) -> dict[str, int]:
    slots: dict[str, int] = {}
    for w in workers:
        for q in w.queues:
            slots[q] = slots.get(q, 0) + w.concurrency
    return slots


def _durations(
    timings: Mapping[str, Sequence[Timing]],
) -> tuple[dict[str, _Durations], dict[str, _Durations]]:
    """The finished jobs' durations, by queue and by task name."""
    by_queue: dict[str, _Durations] = {}
    by_task: dict[str, _Durations] = {}
    for queue, ts in timings.items():
        dq = by_queue.setdefault(queue, _Durations())
        for t in ts:
            dq.add(t)
            by_task.setdefault(t.name, _Durations()).add(t)
    return by_queue, by_task


def _task_counters(sample: Sample | None) -> dict[str, Counters]:
    out: dict[str, Counters] = {}
    for stats in sample.queues.values() if sample else ():
        for name, c in stats.by_task.items():
            out[name] = out[name] + c if name in out else c
    return out


def _task_queues(sample: Sample) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for queue, stats in sample.queues.items():
        for name in stats.by_task:
            out.setdefault(name, set()).add(queue)
    return out


def build_report(
    base: Sample | None,
    now: Sample,
    timings: Mapping[str, Sequence[Timing]],
    workers: Sequence[WorkerInfo],
    *,
    target_wait_s: float = 1.0,
) -> StatsReport:
    """Compute the report from two samples (``base=None``: since the counters began),
    the finished jobs' timings per queue, and the live workers. Pure: no I/O."""
    base_at = base.at if base is not None else now.at
    slots = _slots_by_queue(workers)
    by_queue, by_task = _durations(timings)
    queues = []
    for name, stats in sorted(now.queues.items()):
        before = base.queues.get(name) if base is not None else None
        counters = before.counters if before else None
        window = Window.between(counters, stats.counters, base_at, now.at)
        flow = _Flow(
            name,
            "queue",
            window,
            by_queue.get(name) or _Durations(),
            slots.get(name, 0),
            stats.counts,
            stats.oldest_pending_at,
        )
        queues.append(flow_stats(flow, now.at, target_wait_s))
    tasks = _task_flows(base, now, base_at, by_task, workers, target_wait_s)
    return StatsReport(
        at=now.at,
        window_s=now.at - base_at,
        queues=queues,
        tasks=tasks,
        workers=len(workers),
        slots=sum(w.concurrency for w in workers),
    )


def _task_flows(
    base: Sample | None,
    now: Sample,
    base_at: float,
    durations: Mapping[str, _Durations],
    workers: Sequence[WorkerInfo],
    target_wait_s: float,
) -> list[FlowStats]:
    before, after = _task_counters(base), _task_counters(now)
    homes = _task_queues(now)
    out = []
    for name, counters in sorted(after.items()):
        serving = [w for w in workers if homes[name] & set(w.queues)]
        window = Window.between(before.get(name), counters, base_at, now.at)
        flow = _Flow(
            name,
            "task",
            window,
            durations.get(name, _Durations()),
            sum(w.concurrency for w in serving),
        )
        out.append(flow_stats(flow, now.at, target_wait_s))
    return out


# --------------------------------------------------------------------------- sampling


class Analytics:
    """Samples a broker's counters and reports Little's-Law analytics over a window.

    Keep one per process (the App keeps one; ``offload stats --watch`` and the metrics
    endpoint keep theirs) and call :meth:`report` as often as wanted: each call samples,
    and the window is measured against the oldest sample inside it. The first call has
    no history, so it waits ``min_span_s`` and samples again.

    Args:
        history_s: how long samples are kept (the longest window that can be asked for).
        min_span_s: the shortest window a report is computed over.
        sample_every_s: samples closer together than this are used but not kept.
        max_timings: at most this many finished jobs per queue feed the percentiles.
    """

    def __init__(
        self,
        *,
        history_s: float = 900.0,
        min_span_s: float = 1.0,
        sample_every_s: float = 1.0,
        max_timings: int = 2000,
    ) -> None:
        self.history_s = history_s
        self.min_span_s = min_span_s
        self.sample_every_s = sample_every_s
        self.max_timings = max_timings
        self._samples: deque[Sample] = deque()
        self._latest: Sample | None = None
        self._lock = threading.Lock()  # the app's sync calls sample from the portal thread

    @property
    def latest(self) -> Sample | None:
        """The most recent sample (kept or not), or ``None`` before the first."""
        return self._latest

    async def sample(self, broker: Broker) -> Sample:
        """Read every queue's counters now and remember them (for later windows)."""
        stats = await broker.stats()
        if stats:
            at = max(s.at for s in stats)
        else:  # no queue yet: ask about one only for the broker's clock
            at = (await broker.stats(["default"]))[0].at
        sample = Sample(at, {s.queue: s for s in stats})
        self._keep(sample)
        self._latest = sample
        return sample

    def _keep(self, sample: Sample) -> None:
        with self._lock:
            self._keep_locked(sample)

    def _keep_locked(self, sample: Sample) -> None:
        samples = self._samples
        if samples and sample.at < samples[-1].at:
            samples.clear()  # the clock went backwards (another store, a fake clock reset)
        if not samples or sample.at - samples[-1].at >= self.sample_every_s:
            samples.append(sample)
        while samples and samples[0].at < sample.at - self.history_s:
            samples.popleft()

    def base_for(self, now: Sample, window_s: float) -> Sample | None:
        """The oldest kept sample within ``window_s`` before ``now`` (not ``now`` itself)."""
        with self._lock:
            kept = list(self._samples)
        for s in kept:
            if s.at >= now.at - window_s and s.at < now.at:
                return s
        return None

    async def report(
        self,
        broker: Broker,
        *,
        window_s: float = 60.0,
        queues: Sequence[str] | None = None,
        target_wait_s: float = 1.0,
    ) -> StatsReport:
        """Measure now and report over (up to) the last ``window_s`` seconds.

        Args:
            broker: the open broker to read.
            window_s: the sliding window; shorter at first, while history builds up.
            queues: only these queues (and the tasks seen in them); default every queue.
            target_wait_s: the mean wait ``slots_needed`` is computed for.
        """
        now = await self.sample(broker)
        base = self.base_for(now, window_s)
        if base is None or now.at - base.at < self.min_span_s:
            first = base or now
            await asyncio.sleep(max(0.0, self.min_span_s - (now.at - first.at)))
            now = await self.sample(broker)
            base = first if first.at < now.at else None
        if queues is not None:
            now = _only(now, queues)
            base = _only(base, queues) if base is not None else None
        timings = await self._timings(broker, now, window_s)
        workers = await broker.workers()
        return build_report(base, now, timings, workers, target_wait_s=target_wait_s)

    async def _timings(
        self, broker: Broker, now: Sample, window_s: float
    ) -> dict[str, list[Timing]]:
        """Finished jobs of the last ``window_s`` per queue (percentiles need no history)."""
        out: dict[str, list[Timing]] = {}
        for name, stats in now.queues.items():
            if stats.counters.finished:
                out[name] = await broker.timings(name, now.at - window_s, self.max_timings)
        return out


def _only(sample: Sample, queues: Sequence[str]) -> Sample:
    wanted = set(queues)
    return Sample(sample.at, {q: s for q, s in sample.queues.items() if q in wanted})
