"""Little's-Law figures per queue, from two snapshots of the broker's counters.

Between an older snapshot ``a`` and a newer ``b`` (``dt`` seconds apart):
λ = Δenqueued/dt, X = Δfinished/dt, L = Δarea/dt (the time-average of jobs in the
system), W = Δsystem_s/Δfinished; utilisation = (Δservice_s/dt)/slots. In a steady
state L ≈ λ·W; the gap between them says how far from steady the queue is. The drain
time is the backlog over the net completion rate X - λ. Wait and service p95 come from
the finished jobs' timings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.dashboard.models import QueueView

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers.base import QueueStats, Timing
    from offload.metrics.report import FlowStats

__all__ = ["apply_report", "p95", "queue_view"]


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile (nearest rank), or ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def queue_view(
    now: QueueStats, base: QueueStats | None, slots: int, timings: Sequence[Timing]
) -> QueueView:
    """The overview row of one queue."""
    c = now.counts
    view = QueueView(
        queue=now.queue,
        pending=c.pending,
        scheduled=c.scheduled,
        queued=c.queued,
        blocked=c.blocked,
        running=c.running,
        retrying=c.retrying,
        succeeded=c.succeeded,
        dead=c.dead,
        cancelled=c.cancelled,
        oldest_pending_age_s=None
        if now.oldest_pending_at is None
        else max(0.0, now.at - now.oldest_pending_at),
        slots=slots,
        wait_p95_s=p95([max(0.0, t.started_at - t.run_at) for t in timings]),
        service_p95_s=p95([max(0.0, t.finished_at - t.started_at) for t in timings]),
    )
    if base is not None and now.at > base.at:
        _rates(view, now, base, slots)
    return view


def _rates(view: QueueView, now: QueueStats, base: QueueStats, slots: int) -> None:
    a, b = base.counters, now.counters
    dt = now.at - base.at
    done = b.finished - a.finished
    view.window_s = dt
    view.lam = max(0.0, (b.enqueued - a.enqueued) / dt)
    view.x = max(0.0, done / dt)
    view.l = max(0.0, (b.area(now.at) - a.area(base.at)) / dt)
    view.w = (b.system_s - a.system_s) / done if done > 0 else None
    if view.w is not None:
        view.lam_w = view.lam * view.w
        top = max(view.l, view.lam_w)
        view.littles_gap = abs(view.l - view.lam_w) / top if top > 0 else 0.0
    if slots > 0:
        view.utilisation = min(1.0, max(0.0, (b.service_s - a.service_s) / dt / slots))
    view.drain_s, view.drain_note = _drain(view.pending + view.running, view.lam, view.x)


def _drain(backlog: int, lam: float, x: float) -> tuple[float | None, str]:
    if backlog == 0:
        return 0.0, "empty"
    if x <= lam:
        return None, "not draining: arrivals keep up with completions"
    return backlog / (x - lam), ""


def apply_report(view: QueueView, flow: FlowStats) -> None:
    """Take the figures of ``offload.metrics`` (what ``app.stats()`` reports) over ours,
    so the dashboard, ``offload stats`` and ``/metrics`` agree."""
    view.window_s = flow.window_s
    view.lam = flow.arrival_rate
    view.x = flow.completion_rate
    view.l = flow.jobs_in_system
    view.w = flow.time_in_system_s
    view.lam_w = flow.little_lw
    view.littles_gap = None if flow.little_error is None else abs(flow.little_error)
    view.utilisation = flow.utilisation
    view.wait_p95_s = flow.wait.p95 if flow.wait.count else view.wait_p95_s
    view.service_p95_s = flow.service.p95 if flow.service.count else view.service_p95_s
    predictions = flow.predictions
    if predictions is None:
        return
    view.wait_now_s = predictions.wait_now_s.value
    view.slots_needed = predictions.slots_needed.value
    if view.pending + view.running == 0:
        view.drain_s, view.drain_note = 0.0, "empty"
    else:
        view.drain_s = predictions.drain_s.value
        view.drain_note = predictions.drain_s.unavailable or predictions.drain_s.assumes
