"""What every page and API endpoint reads, as typed views (see :mod:`.models`).

Each method makes a bounded number of broker calls whatever the store holds: listings
are pages from an index, counts come from the broker's counters, timings are capped.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from offload.brokers.base import JobState, QueueStats, group_queue
from offload.dashboard import analytics, present
from offload.dashboard.models import (
    GroupView,
    JobDetail,
    JobList,
    Overview,
    ScheduleList,
    ScheduleView,
    Series,
    TopicView,
    WorkerView,
)
from offload.metrics.littles_law import Sample, build_report
from offload.schedules import schedule_infos

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.app import App
    from offload.brokers import Broker
    from offload.brokers.base import TopicInfo, WorkerInfo
    from offload.dashboard.sampler import Sampler

__all__ = ["Queries"]

TIMINGS_PER_QUEUE = 500


class Queries:
    """Reads for one dashboard.

    Args:
        app: the App whose broker is inspected.
        sampler: the dashboard's snapshot history.
        window_s: the span rates are measured over.
    """

    def __init__(
        self, app: App, sampler: Sampler, window_s: float = 60.0, stats_ttl_s: float = 1.0
    ) -> None:
        self.app = app
        self.sampler = sampler
        self.window_s = window_s
        self.stats_ttl_s = stats_ttl_s
        self._stats: tuple[float, list[QueueStats]] | None = None
        self._stats_lock = asyncio.Lock()

    async def stats(self) -> list[QueueStats]:
        """Every queue's stats, read at most once per ``stats_ttl_s`` however many pages
        and viewers ask (the counts are aggregates: a second old is fresh enough)."""
        async with self._stats_lock:
            now = asyncio.get_running_loop().time()
            if self._stats is not None and now - self._stats[0] < self.stats_ttl_s:
                return self._stats[1]
            stats = await (await self.broker()).stats()
            self._stats = (asyncio.get_running_loop().time(), stats)
            return stats

    async def broker(self) -> Broker:
        """The app's broker for the running loop."""
        return await self.app.broker()

    async def queue_names(self) -> list[str]:
        """Every queue the broker knows."""
        return await (await self.broker()).queues()

    async def sample(self) -> list[QueueStats]:
        """Read every queue's stats and let the sampler keep them."""
        stats = await self.stats()
        self.sampler.observe(stats)
        return stats

    async def overview(self) -> Overview:
        """Every queue with counts and rates, and the live worker count."""
        broker = await self.broker()
        stats = await self.stats()
        now = self.sampler.observe(stats)
        base = self.sampler.base_for(now, self.window_s)
        workers = await broker.workers()
        slots = _slots(workers)
        rows, timings = [], {}
        for s in stats:
            timings[s.queue] = await broker.timings(
                s.queue, s.at - self.window_s, TIMINGS_PER_QUEUE
            )
            before = base.queues.get(s.queue) if base is not None else None
            rows.append(analytics.queue_view(s, before, slots.get(s.queue, 0), timings[s.queue]))
        if base is not None and base.at < now.at:
            report = build_report(
                Sample(base.at, base.queues), Sample(now.at, now.queues), timings, workers
            )
            flows = {f.name: f for f in report.queues}
            for row in rows:
                if row.queue in flows:
                    analytics.apply_report(row, flows[row.queue])
        return Overview(
            at=now.at,
            backend=broker.capabilities.name,
            read_only=False,
            workers=len(workers),
            queues=rows,
            analytics="offload.metrics.littles_law",
        )

    async def series(self, window_s: float) -> Series:
        """Chart data over the last ``window_s`` seconds (sampling once more now)."""
        await self.sample()
        return self.sampler.series(window_s)

    async def jobs(
        self,
        *,
        queue: str | None,
        state: JobState | None,
        task: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobList:
        """A page of jobs matching the typed filters, newest first."""
        broker = await self.broker()
        page = await broker.list_jobs(
            queue=queue, state=state, name=task, limit=limit, cursor=cursor
        )
        return JobList(jobs=[present.summary(r) for r in page.jobs], next_cursor=page.next_cursor)

    async def job(self, job_id: str) -> JobDetail | None:
        """One job in full, or ``None`` if the store has no such job."""
        rec = await (await self.broker()).get_job(job_id)
        return None if rec is None else present.detail(rec)

    async def workers(self) -> list[WorkerView]:
        """Live workers, grouped by host and supervisor."""
        broker = await self.broker()
        now = self.app.clock.now()
        infos = sorted(
            await broker.workers(), key=lambda w: (w.hostname, w.supervisor_pid or 0, w.pid)
        )
        return [_worker_view(w, now) for w in infos]

    async def topics(self) -> list[TopicView]:
        """Topics with their groups and each group's lag."""
        broker = await self.broker()
        infos = await broker.topics()
        queues = [group_queue(t.name, g.group) for t in infos for g in t.groups]
        stats = {s.queue: s for s in await broker.stats(queues)} if queues else {}
        return [_topic_view(t, stats) for t in infos]

    async def schedules(self) -> ScheduleList:
        """The app's schedules with their last and next runs."""
        infos = await schedule_infos(self.app)
        return ScheduleList(
            available=True,
            schedules=[
                ScheduleView(
                    name=i.name,
                    task=i.task,
                    queue=i.queue,
                    trigger=i.trigger,
                    misfire=str(i.misfire),
                    next_run=i.next_tick,
                    last_run=i.last_tick,
                    last_job_id=i.last_job_id,
                    skipped=i.skipped,
                )
                for i in infos
            ],
        )


def _slots(workers: Sequence[WorkerInfo]) -> dict[str, int]:
    slots: dict[str, int] = {}
    for w in workers:
        for q in w.queues:
            slots[q] = slots.get(q, 0) + w.concurrency
    return slots


def _worker_view(w: WorkerInfo, now: float) -> WorkerView:
    return WorkerView(
        id=w.id,
        hostname=w.hostname,
        pid=w.pid,
        supervisor_pid=w.supervisor_pid,
        state=w.state,
        queues=list(w.queues),
        concurrency=w.concurrency,
        running=list(w.running),
        processed=w.processed,
        failed=w.failed,
        started_at=w.started_at,
        last_seen=w.last_seen,
        seen_ago_s=max(0.0, now - w.last_seen) if w.last_seen else 0.0,
        version=w.version,
    )


def _topic_view(t: TopicInfo, stats: dict[str, QueueStats]) -> TopicView:
    groups = []
    for g in t.groups:
        s = stats.get(g.queue)
        counts = s.counts if s is not None else None
        groups.append(
            GroupView(
                group=g.group,
                queue=g.queue,
                lag=0 if counts is None else counts.pending + counts.running,
                running=0 if counts is None else counts.running,
                dead=0 if counts is None else counts.dead,
                created_at=g.created_at,
            )
        )
    return TopicView(
        name=t.name,
        first_offset=t.first_offset,
        last_offset=t.last_offset,
        retained=t.retained,
        retention_s=t.retention_s,
        max_events=t.max_events,
        groups=groups,
    )
