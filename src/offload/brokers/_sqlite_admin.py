"""Coordination and inspection on SQLite: named leases, token buckets, key-value, the
worker registry, stats, listings and repairs.

Runs on the broker's database thread. Writes run inside :meth:`Database.write`; reads
that combine several statements run in one read transaction (:meth:`Database.snapshot`)
so they see one consistent state.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import msgspec

from offload.brokers._sqlite_rows import record_of
from offload.brokers._sqlite_store import PENDING
from offload.brokers._sqlite_tally import counters_of, state_counts_of
from offload.brokers.base import (
    Counters,
    JobPage,
    JobState,
    QueueStats,
    Timing,
    WorkerInfo,
)
from offload.errors import BrokerError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers._sqlite_store import JobStore
    from offload.brokers._sqlite_tally import Tally

__all__ = ["AdminStore"]

_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_NO_CURSOR = 2**63 - 1


class AdminStore:
    """Coordination primitives and inspection over the :class:`JobStore`'s connection."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.con = jobs.con
        self.q = jobs.q

    # ------------------------------------------------------------------ coordination

    def acquire_lease(self, now: float, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew a named lease (one upsert that only succeeds for the holder or
        when the lease has expired)."""
        row = self.con.execute(self.q.lease_acquire, (name, owner, now + ttl_s, now)).fetchone()
        return row is not None

    def release_lease(self, name: str, owner: str) -> bool:
        """Give a named lease up if ``owner`` holds it."""
        return self.con.execute(self.q.lease_release, (name, owner)).fetchone() is not None

    def take_tokens(self, now: float, bucket: str, rate: float, burst: float, n: float) -> float:
        """Token bucket: 0.0 if ``n`` tokens were taken, else seconds until there are."""
        self.con.execute(self.q.bucket_init, (bucket, burst, now))
        row = self.con.execute(self.q.bucket_take, (bucket, rate, burst, n, now)).fetchone()
        return float(row[0])

    def kv_get(self, now: float, key: str) -> bytes | None:
        """A live value, or None."""
        row = self.con.execute(self.q.kv_get, (key, now)).fetchone()
        return None if row is None else bytes(row[0])

    def kv_set(self, now: float, key: str, value: bytes, ttl_s: float | None) -> None:
        """Store a value, expiring ``ttl_s`` from now (never, if None)."""
        expires = None if ttl_s is None else now + ttl_s
        self.con.execute(self.q.kv_set, (key, value, expires))

    def register_worker(self, now: float, info: WorkerInfo, ttl_s: float) -> None:
        """Record a worker as seen now, alive for ``ttl_s``."""
        seen = msgspec.structs.replace(info, last_seen=now)
        self.con.execute(self.q.worker_upsert, (info.id, msgspec.json.encode(seen), now + ttl_s))

    def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        self.con.execute(self.q.worker_delete, (worker_id,))

    def workers(self, now: float) -> list[WorkerInfo]:
        """Workers seen within their TTL."""
        rows = self.con.execute(self.q.workers_live, (now,)).fetchall()
        return [_worker_decoder.decode(r[0]) for r in rows]

    def prune_coordination(self, now: float) -> None:
        """Drop expired key-value entries and silent workers."""
        self.con.execute(self.q.prune_kv, (now,))
        self.con.execute(self.q.prune_workers, (now,))

    # ------------------------------------------------------------------ inspection

    def queues(self) -> list[str]:
        """Every queue that holds or held jobs."""
        return [r[0] for r in self.con.execute(self.q.queues).fetchall()]

    def stats(self, now: float, queues: Sequence[str] | None) -> list[QueueStats]:
        """Counts and counters per queue, read from ``stats`` (no scan of ``jobs``)."""
        names = self.queues() if queues is None else list(queues)
        return [self._queue_stats(now, queue) for queue in names]

    def _queue_stats(self, now: float, queue: str) -> QueueStats:
        rows = self.con.execute(self.q.stats_of_queue, (queue,)).fetchall()
        by_task = {r[1]: counters_of(r) for r in rows}
        oldest = self.con.execute(self.q.oldest_pending, (queue,)).fetchone()[0]
        return QueueStats(
            queue=queue,
            at=now,
            counts=state_counts_of(rows),
            counters=sum(by_task.values(), Counters()),
            by_task=by_task,
            oldest_pending_at=oldest,
        )

    def list_jobs(
        self,
        queue: str | None,
        state: JobState | None,
        name: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        """Newest first: each (queue, state) slice is an index walk, merged by arrival."""
        before = _parse_cursor(cursor)
        queues = [queue] if queue is not None else self.queues()
        sql = self._listing_for(state)
        wanted = None if state is None else state.value
        rows = []
        for q in queues:
            rows += self.con.execute(sql, (q, wanted, before, name, limit + 1)).fetchall()
        rows.sort(key=lambda r: r[0], reverse=True)
        page = rows[: max(0, limit)]
        more = len(rows) > limit
        next_cursor = str(page[-1][0]) if more and page else None
        return JobPage([record_of(r[1:]) for r in page], next_cursor)

    def _listing_for(self, state: JobState | None) -> str:
        """The listing statement whose index suits ``state`` (see queries.sql)."""
        if state is None:
            return self.q.list_jobs
        if state in (JobState.DEAD, JobState.CANCELLED, JobState.BLOCKED):
            return self.q.list_jobs_rare
        if state is JobState.RUNNING:
            return self.q.list_jobs_running
        return self.q.list_jobs_walk

    def timings(self, queue: str, since: float, limit: int) -> list[Timing]:
        """Finished jobs of a queue since ``since``, newest first."""
        rows = self.con.execute(self.q.timings, (queue, since, limit)).fetchall()
        return [Timing(n, JobState(s), enq, due, start, fin) for n, s, enq, due, start, fin in rows]

    def purge(self, tally: Tally, now: float, queue: str, states: Sequence[JobState] | None) -> int:
        """Delete a queue's jobs in ``states`` (default: pending); running jobs stay."""
        wanted = {s.value for s in states} if states is not None else set(PENDING)
        wanted.discard(JobState.RUNNING.value)
        rows = self.con.execute(self.q.queue_ids_in_states, (queue, json.dumps(sorted(wanted))))
        ids = [r[0] for r in rows.fetchall()]
        return self.jobs.delete(tally, now, ids)


def _parse_cursor(cursor: str | None) -> int:
    if not cursor:
        return _NO_CURSOR
    try:
        return int(cursor)
    except ValueError as exc:
        raise BrokerError(
            f"Invalid job listing cursor {cursor!r}: pass back the next_cursor of a page."
        ) from exc
