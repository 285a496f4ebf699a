"""Prometheus metrics read from the broker: one endpoint for every worker and queue.

The collector reads the broker's cumulative counters (the same for every backend) and the
Little's-Law analytics, so one scrape target sees the whole system, whichever process
does the work. Names follow Prometheus conventions: base units in the name, ``_total``
on counters, labels for the queue, task, state and outcome. PromQL can compute the
windowed figures itself from the counters, e.g.::

    rate(offload_jobs_enqueued_total[5m])                      # λ, arrivals/s
    rate(offload_jobs_in_system_seconds_total[5m])             # L (time-averaged)
    rate(offload_job_time_in_system_seconds_sum[5m])
      / rate(offload_job_time_in_system_seconds_count[5m])     # W

and the ``offload_queue_*`` / ``offload_task_*`` gauges carry the analytics over the
collector's window (percentiles, utilisation, predictions). Serve them with
``offload metrics --port 9464``, or mount :func:`metrics_app` in any ASGI application::

    app.mount("/metrics", metrics_app(offload_app.broker))
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import start_http_server

from offload.errors import OffloadError
from offload.metrics.littles_law import Analytics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from offload.brokers.base import Broker, Counters, QueueStats
    from offload.metrics.littles_law import Sample
    from offload.metrics.report import FlowStats, StatsReport

__all__ = ["BrokerCollector", "metrics_app", "render", "serve"]


class BrokerCollector:
    """A ``prometheus_client`` collector over one broker.

    :meth:`refresh` (async) reads the broker; :meth:`collect` (sync, as prometheus_client
    calls it) turns the last reading into metric families.

    Args:
        source: returns the open broker (``App.broker`` fits).
        window_s: the window of the ``offload_queue_*``/``offload_task_*`` analytics.
        target_wait_s: the mean wait ``offload_queue_slots_needed`` is computed for.
        analytics: the sampler to use (default: a new one kept by this collector).
    """

    def __init__(
        self,
        source: Callable[[], Awaitable[Broker]],
        *,
        window_s: float = 60.0,
        target_wait_s: float = 1.0,
        analytics: Analytics | None = None,
    ) -> None:
        self._source = source
        self.window_s = window_s
        self.target_wait_s = target_wait_s
        self.analytics = analytics or Analytics(min_span_s=0.0)
        self._last: tuple[Sample, StatsReport] | None = None

    async def refresh(self) -> None:
        """Read the broker now (counters, timings, workers)."""
        broker = await self._source()
        report = await self.analytics.report(
            broker, window_s=self.window_s, target_wait_s=self.target_wait_s
        )
        sample = self.analytics.latest
        assert sample is not None
        self._last = (sample, report)

    def describe(self) -> list[Metric]:
        """Nothing up front: the metric set depends on the broker's queues."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families of the last :meth:`refresh` (none before the first)."""
        if self._last is None:
            return
        sample, report = self._last
        yield from _counter_families(sample.queues.values())
        yield from _state_families(sample.queues.values())
        yield from _worker_families(report)
        yield from _flow_families("offload_queue", "queue", report.queues)
        yield from _flow_families("offload_task", "task", report.tasks)


# --------------------------------------------------------------------------- families


def _pairs(stats: Iterable[QueueStats]) -> Iterator[tuple[list[str], Counters, float]]:
    """(queue, task) label values, their counters, and when they were read."""
    for s in stats:
        for task, c in sorted(s.by_task.items()):
            yield [s.queue, task], c, s.at


_COUNTERS: dict[str, tuple[str, Callable[[Counters, float], float]]] = {
    "offload_jobs_enqueued": ("Jobs enqueued.", lambda c, at: c.enqueued),
    "offload_job_attempts_started": ("Attempts started (claims).", lambda c, at: c.started),
    "offload_job_retries": ("Failed attempts scheduled to run again.", lambda c, at: c.retried),
    "offload_job_recoveries": (
        "Expired leases returned to the queue (a worker crashed or hung).",
        lambda c, at: c.recovered,
    ),
    "offload_jobs_in_system_seconds": (
        "Job-seconds spent in the system, the integral of L dt: rate() of it is L, "
        "the time-averaged number of jobs waiting or running.",
        lambda c, at: c.area(at),
    ),
}


def _counter_families(stats: Iterable[QueueStats]) -> Iterator[Metric]:
    stats = list(stats)
    labels = ["queue", "task"]
    for name, (doc, value) in _COUNTERS.items():
        family = CounterMetricFamily(name, doc, labels=labels)
        for lv, c, at in _pairs(stats):
            family.add_metric(lv, value(c, at))
        yield family
    finished = CounterMetricFamily(
        "offload_jobs_finished", "Jobs that reached a final state.", labels=[*labels, "outcome"]
    )
    for lv, c, _ in _pairs(stats):
        for outcome in ("succeeded", "dead", "cancelled"):
            finished.add_metric([*lv, outcome], getattr(c, outcome))
    yield finished
    yield from _summaries(stats, labels)


_SUMMARIES: dict[str, tuple[str, Callable[[Counters], tuple[int, float]]]] = {
    "offload_job_wait_seconds": (
        "Seconds from due to first start, over first attempts started.",
        lambda c: (c.waited, c.wait_s),
    ),
    "offload_job_service_seconds": (
        "Seconds spent running attempts that reported an outcome.",
        lambda c: (c.succeeded + c.dead + c.retried, c.service_s),
    ),
    "offload_job_time_in_system_seconds": (
        "Seconds from enqueue to a final state, over finished jobs.",
        lambda c: (c.finished, c.system_s),
    ),
}


def _summaries(stats: list[QueueStats], labels: list[str]) -> Iterator[Metric]:
    for name, (doc, value) in _SUMMARIES.items():
        family = SummaryMetricFamily(name, doc, labels=labels)
        for lv, c, _ in _pairs(stats):
            count, total = value(c)
            family.add_metric(lv, count_value=count, sum_value=total)
        yield family


def _state_families(stats: Iterable[QueueStats]) -> Iterator[Metric]:
    stats = list(stats)
    jobs = GaugeMetricFamily("offload_jobs", "Jobs per state now.", labels=["queue", "state"])
    in_system = GaugeMetricFamily(
        "offload_jobs_in_system", "Jobs enqueued and not yet final, now.", labels=["queue", "task"]
    )
    oldest = GaugeMetricFamily(
        "offload_queue_oldest_pending_age_seconds",
        "How long the oldest pending job has waited.",
        labels=["queue"],
    )
    for s in stats:
        for state, n in _counts(s).items():
            jobs.add_metric([s.queue, state], n)
        for lv, c, _ in _pairs([s]):
            in_system.add_metric(lv, c.in_system)
        if s.oldest_pending_at is not None:
            oldest.add_metric([s.queue], max(0.0, s.at - s.oldest_pending_at))
    yield from (jobs, in_system, oldest)


def _counts(s: QueueStats) -> dict[str, int]:
    c = s.counts
    return {f: getattr(c, f) for f in c.__struct_fields__}


def _worker_families(report: StatsReport) -> Iterator[Metric]:
    yield GaugeMetricFamily("offload_workers", "Live worker processes.", value=report.workers)
    yield GaugeMetricFamily("offload_worker_slots", "Their total concurrency.", value=report.slots)
    yield GaugeMetricFamily(
        "offload_analytics_window_seconds",
        "The span the offload_queue_* and offload_task_* analytics cover.",
        value=report.window_s,
    )


_FLOW_GAUGES: dict[str, tuple[str, Callable[[FlowStats], float | None]]] = {
    "arrivals_per_second": ("λ: jobs enqueued per second.", lambda f: f.arrival_rate),
    "completions_per_second": ("X: jobs finished per second.", lambda f: f.completion_rate),
    "jobs_in_system_mean": ("L: time-averaged jobs in system.", lambda f: f.jobs_in_system),
    "time_in_system_mean_seconds": ("W: mean time in system.", lambda f: f.time_in_system_s),
    "little_lambda_w": ("λ·W, what Little's Law predicts L to be.", lambda f: f.little_lw),
    "busy_slots": ("Time-averaged slots busy.", lambda f: f.busy_slots),
    "slots": ("Worker slots that serve it.", lambda f: float(f.slots)),
    "utilisation_ratio": ("Busy slots / slots.", lambda f: f.utilisation),
}
_PREDICTIONS: dict[str, tuple[str, str]] = {
    "predicted_drain_seconds": ("drain_s", "Predicted seconds to finish today's backlog."),
    "predicted_wait_seconds": ("wait_now_s", "Predicted wait of a job enqueued now."),
    "steady_wait_seconds": ("steady_wait_s", "M/M/c (Erlang C) mean wait at today's load."),
    "slots_needed": ("slots_needed", "Slots to keep the M/M/c mean wait under target."),
}


def _flow_families(prefix: str, label: str, flows: list[FlowStats]) -> Iterator[Metric]:
    for suffix, (doc, value) in _FLOW_GAUGES.items():
        yield _gauge(f"{prefix}_{suffix}", doc, label, ((f.name, value(f)) for f in flows))
    for suffix, (attr, doc) in _PREDICTIONS.items():
        values = ((f.name, _predicted(f, attr)) for f in flows)
        yield _gauge(f"{prefix}_{suffix}", doc, label, values)
    for kind in ("wait", "service", "time_in_system"):
        family = GaugeMetricFamily(
            f"{prefix}_{kind}_seconds",
            f"{kind.replace('_', ' ').capitalize()} percentiles over the window's finished jobs.",
            labels=[label, "quantile"],
        )
        for f in flows:
            p = getattr(f, kind)
            for q, v in (("0.5", p.p50), ("0.95", p.p95), ("0.99", p.p99)):
                if v is not None:
                    family.add_metric([f.name, q], v)
        yield family


def _gauge(
    name: str, doc: str, label: str, values: Iterable[tuple[str, float | None]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values:
        if value is not None:
            family.add_metric([key], value)
    return family


def _predicted(f: FlowStats, attr: str) -> float | None:
    return getattr(f.predictions, attr).value if f.predictions is not None else None


# --------------------------------------------------------------------------- serving


def render(collector: BrokerCollector) -> bytes:
    """The text exposition of the collector's last reading."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def metrics_app(
    source: Callable[[], Awaitable[Broker]], *, window_s: float = 60.0, target_wait_s: float = 1.0
) -> Callable[..., Awaitable[None]]:
    """An ASGI app answering every GET with the metrics (mount it at ``/metrics``).

    Each request reads the broker (so the numbers are current); a broker that cannot be
    reached answers ``503`` with the reason.
    """
    collector = BrokerCollector(source, window_s=window_s, target_wait_s=target_wait_s)
    lock = asyncio.Lock()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            async with lock:
                await collector.refresh()
                body, status, ctype = render(collector), 200, CONTENT_TYPE_LATEST
        except OffloadError as exc:
            body, status, ctype = f"broker unavailable: {exc}\n".encode(), 503, "text/plain"
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Bridge:
    """Lets prometheus_client's server thread read through the event loop that owns the
    broker: each scrape runs :meth:`BrokerCollector.refresh` on that loop."""

    def __init__(self, collector: BrokerCollector, loop: asyncio.AbstractEventLoop) -> None:
        self._collector = collector
        self._loop = loop

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        future = asyncio.run_coroutine_threadsafe(self._collector.refresh(), self._loop)
        with contextlib.suppress(OffloadError, TimeoutError):
            future.result(timeout=30)  # on failure, the last good reading is served
        yield from self._collector.collect()


async def serve(
    source: Callable[[], Awaitable[Broker]],
    *,
    host: str = "0.0.0.0",
    port: int = 9464,
    window_s: float = 60.0,
    target_wait_s: float = 1.0,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``/metrics`` over HTTP until cancelled (``offload metrics``).

    Args:
        source: returns the open broker.
        host, port: where to listen (port 0: any free port, reported to ``ready``).
        window_s, target_wait_s: as for :class:`BrokerCollector`.
        ready: called with the bound port once listening.
    """
    collector = BrokerCollector(source, window_s=window_s, target_wait_s=target_wait_s)
    await collector.refresh()  # fail fast on a wrong broker, and start the window
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Bridge(collector, asyncio.get_running_loop()))
    server, thread = start_http_server(port, host, registry)
    if ready is not None:
        ready(server.server_port)
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
