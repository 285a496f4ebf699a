"""The memory broker: the reference implementation of the protocol.

``memory://`` keeps everything in this process, for tests and eager use. It is written
for clarity, not speed: each operation runs under one lock with plain dicts and heaps,
and every state change goes through :meth:`MemoryBroker._move` so the state counts stay
exact. Other backends are checked against it by ``tests/conformance``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import msgspec

from offload.brokers._wakeup import Notifier
from offload.brokers.base import (
    STATS_EPOCH,
    Ack,
    BrokerBase,
    Bury,
    Capabilities,
    Counters,
    Delivery,
    EnqueueOutcome,
    EnqueueRequest,
    ErrorRecord,
    EventRequest,
    GroupInfo,
    GroupSpec,
    JobPage,
    JobRecord,
    JobState,
    LeaseState,
    MarkCancelled,
    QueueStats,
    Release,
    RetryLater,
    Settlement,
    StateCounts,
    Timing,
    TopicInfo,
    TopicSpec,
    WorkerInfo,
    group_queue,
)
from offload.clock import Clock, system_clock

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MemoryBroker"]

_PENDING = (JobState.SCHEDULED, JobState.QUEUED, JobState.BLOCKED, JobState.RETRYING)


@dataclass(slots=True)
class _Job:
    id: str
    seq: int
    queue: str
    name: str
    kind: Literal["job", "event"]
    payload: bytes
    priority: int
    key: str | None
    key_limit: int
    dedupe_key: str | None
    max_attempts: int
    max_recoveries: int
    result_ttl_s: float
    dead_ttl_s: float
    enqueued_at: float
    run_at: float
    due_at: float
    state: JobState = JobState.QUEUED
    attempts: int = 0
    recoveries: int = 0
    waited: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    result: bytes | None = None
    errors: list[ErrorRecord] = field(default_factory=list)
    progress: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    worker_id: str | None = None
    lease_token: int | None = None
    lease_expires: float | None = None
    epoch: int = 0


@dataclass(slots=True)
class _Key:
    active: int = 0
    blocked: deque[str] = field(default_factory=deque)


@dataclass(slots=True)
class _Topic:
    spec: TopicSpec
    log: deque[tuple[int, EventRequest]] = field(default_factory=deque)
    next_offset: int = 0
    groups: dict[str, tuple[GroupSpec, float]] = field(default_factory=dict)
    replays: int = 0


class MemoryBroker(BrokerBase):
    """Everything in one process's memory; nothing survives it."""

    def __init__(self, url: str = "memory://", *, clock: Clock = system_clock) -> None:
        self.url = url
        self.capabilities = Capabilities(
            name="memory", durable=False, shared=False, push_wakeups=True
        )
        self.clock = clock
        self._lock = threading.RLock()
        self._changed = Notifier()
        self._seq = itertools.count(1)
        self._jobs: dict[str, _Job] = {}
        self._ready: dict[str, list[tuple[int, float, int, int, str]]] = {}
        self._delayed: list[tuple[float, int, int, str]] = []
        self._leases: list[tuple[float, int, str]] = []
        self._expiring: list[tuple[float, str]] = []
        self._keys: dict[tuple[str, str], _Key] = {}
        self._dedupe: dict[tuple[str, str], str] = {}
        self._counts: dict[str, dict[JobState, int]] = {}
        self._counters: dict[tuple[str, str], Counters] = {}
        self._topics: dict[str, _Topic] = {}
        self._named_leases: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._kv: dict[str, tuple[bytes, float | None]] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._rr = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ state helpers

    def _counter(self, job: _Job) -> Counters:
        key = (job.queue, job.name)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = Counters()
        return c

    def _move(self, job: _Job, state: JobState | None) -> None:
        """Change a job's state (``None``: remove it), keeping counts and indexes right."""
        counts = self._counts.get(job.queue) or self._new_counts(job.queue)
        counts[job.state] -= 1
        if state is None:
            del self._jobs[job.id]
            return
        counts[state] += 1
        job.state = state
        job.epoch += 1
        if state is JobState.QUEUED:
            heap = self._ready.setdefault(job.queue, [])
            heapq.heappush(heap, (-job.priority, job.run_at, job.seq, job.epoch, job.id))
        elif state in (JobState.SCHEDULED, JobState.RETRYING):
            heapq.heappush(self._delayed, (job.run_at, job.seq, job.epoch, job.id))

    def _new_counts(self, queue: str) -> dict[JobState, int]:
        counts = self._counts[queue] = dict.fromkeys(JobState, 0)
        return counts

    def _place(self, job: _Job, now: float) -> None:
        """Send a job that may run to queued, or scheduled if it is not due yet."""
        self._move(job, JobState.SCHEDULED if job.run_at > now else JobState.QUEUED)

    def _pending(self, queue: str) -> int:
        counts = self._counts.get(queue)
        return sum(counts[s] for s in _PENDING) if counts else 0

    # ------------------------------------------------------------------ enqueue

    async def enqueue(self, requests: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        with self._lock:
            now = self.clock.now()
            out = [self._enqueue_one(r, now, bounded=True) for r in requests]
        self._changed.notify()
        return out

    def _enqueue_one(self, req: EnqueueRequest, now: float, *, bounded: bool) -> EnqueueOutcome:
        if req.id in self._jobs:
            return EnqueueOutcome("duplicate", req.id)
        if req.dedupe_key is not None:
            holder = self._dedupe.get((req.queue, req.dedupe_key))
            if holder is not None:
                return EnqueueOutcome("duplicate", holder)
        if bounded and req.max_depth is not None:
            depth = self._pending(req.queue)
            if depth >= req.max_depth:
                return EnqueueOutcome("full", req.id, depth)
        run_at = req.eta if req.eta is not None else req.enqueued_at
        job = _Job(
            id=req.id,
            seq=next(self._seq),
            queue=req.queue,
            name=req.name,
            kind=req.kind,
            payload=req.payload,
            priority=req.priority,
            key=req.key,
            key_limit=max(1, req.key_limit),
            dedupe_key=req.dedupe_key,
            max_attempts=req.max_attempts,
            max_recoveries=req.max_recoveries,
            result_ttl_s=req.result_ttl_s,
            dead_ttl_s=req.dead_ttl_s,
            enqueued_at=req.enqueued_at,
            run_at=run_at,
            due_at=max(run_at, req.enqueued_at),
        )
        self._admit(job, now)
        return EnqueueOutcome("queued", req.id)

    def _admit(self, job: _Job, now: float) -> None:
        """Add a job to the system: counts, dedupe, key slot, counters."""
        self._jobs[job.id] = job
        counts = self._counts.get(job.queue) or self._new_counts(job.queue)
        counts[job.state] += 1
        if job.dedupe_key is not None:
            self._dedupe[job.queue, job.dedupe_key] = job.id
        c = self._counter(job)
        c.enqueued += 1
        c.in_system += 1
        c.in_system_enq_s += job.enqueued_at - STATS_EPOCH
        if job.key is not None:
            slot = self._keys.setdefault((job.queue, job.key), _Key())
            if slot.active >= job.key_limit or slot.blocked:
                slot.blocked.append(job.id)
                self._move(job, JobState.BLOCKED)
                return
            slot.active += 1
        self._place(job, now)

    # ------------------------------------------------------------------ claim

    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_s: float,
        wait_s: float = 0.0,
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            version = self._changed.version
            with self._lock:
                now = self.clock.now()
                got = self._claim_now(queues, worker_id, limit, lease_s, now)
                next_due = self._delayed[0][0] - now if self._delayed else None
            remaining = deadline - loop.time()
            if got or limit <= 0 or remaining <= 0:
                return got
            timeout = remaining if next_due is None else max(0.001, min(remaining, next_due))
            await self._changed.wait(timeout, version)

    def _promote_due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, epoch, job_id = heapq.heappop(delayed)
            job = self._jobs.get(job_id)
            if job is not None and job.epoch == epoch:
                self._move(job, JobState.QUEUED)

    def _claim_now(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_s: float, now: float
    ) -> list[Delivery]:
        self._promote_due(now)
        out: list[Delivery] = []
        if not queues:
            return out
        start = self._rr % len(queues)
        self._rr += 1
        for queue in itertools.chain(queues[start:], queues[:start]):
            heap = self._ready.get(queue)
            while heap and len(out) < limit:
                *_, epoch, job_id = heapq.heappop(heap)
                job = self._jobs.get(job_id)
                if job is not None and job.epoch == epoch:
                    out.append(self._start(job, worker_id, lease_s, now))
        return out

    def _start(self, job: _Job, worker_id: str, lease_s: float, now: float) -> Delivery:
        self._move(job, JobState.RUNNING)
        job.attempts += 1
        job.lease_token = secrets.randbits(62) + 1
        job.lease_expires = now + lease_s
        job.started_at = now
        job.worker_id = worker_id
        heapq.heappush(self._leases, (job.lease_expires, job.lease_token, job.id))
        c = self._counter(job)
        c.started += 1
        if not job.waited:
            job.waited = True
            c.waited += 1
            c.wait_s += max(0.0, now - job.due_at)
        return self._delivery(job)

    @staticmethod
    def _delivery(job: _Job) -> Delivery:
        assert job.lease_token is not None and job.lease_expires is not None
        return Delivery(
            job_id=job.id,
            queue=job.queue,
            name=job.name,
            kind=job.kind,
            payload=job.payload,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            recoveries=job.recoveries,
            lease_token=job.lease_token,
            lease_expires=job.lease_expires,
            enqueued_at=job.enqueued_at,
            priority=job.priority,
            key=job.key,
        )

    # ------------------------------------------------------------------ leases

    def _held(self, d: Delivery, now: float) -> _Job | None:
        """The job if ``d`` still holds its lease, else None (the fencing check)."""
        job = self._jobs.get(d.job_id)
        if (
            job is None
            or job.state is not JobState.RUNNING
            or job.lease_token != d.lease_token
            or job.lease_expires is None
            or job.lease_expires <= now
        ):
            return None
        return job

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[LeaseState]:
        out: list[LeaseState] = []
        with self._lock:
            now = self.clock.now()
            for d in deliveries:
                job = self._held(d, now)
                if job is None:
                    out.append(LeaseState.LOST)
                    continue
                job.lease_expires = now + lease_s
                d.lease_expires = job.lease_expires
                assert job.lease_token is not None
                heapq.heappush(self._leases, (job.lease_expires, job.lease_token, job.id))
                out.append(LeaseState.CANCEL_REQUESTED if job.cancel_requested else LeaseState.OK)
        return out

    async def set_progress(self, delivery: Delivery, value: float, message: str | None) -> bool:
        with self._lock:
            job = self._held(delivery, self.clock.now())
            if job is None:
                return False
            job.progress = value
            job.progress_message = message
        self._changed.notify()
        return True

    # ------------------------------------------------------------------ settle

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        out: list[bool] = []
        with self._lock:
            now = self.clock.now()
            for s in settlements:
                job = self._held(s.delivery, now)
                if job is not None:
                    self._apply(job, s, now)
                out.append(job is not None)
        self._changed.notify()
        return out

    def _apply(self, job: _Job, s: Settlement, now: float) -> None:
        if isinstance(s, Release):
            job.attempts -= 1
            self._clear_lease(job)
            job.run_at = now + s.delay_s
            self._place(job, now)
            return
        c = self._counter(job)
        c.service_s += now - (job.started_at or now)
        self._clear_lease(job)
        if isinstance(s, RetryLater):
            job.errors.append(s.error)
            job.run_at = now + s.delay_s
            c.retried += 1
            self._move(job, JobState.RETRYING)
        elif isinstance(s, Ack):
            job.result = s.result
            self._finish(job, JobState.SUCCEEDED, now)
            self._follow_up(s.follow_ups, now)
        elif isinstance(s, Bury):
            job.errors.append(s.error)
            self._finish(job, JobState.DEAD, now)
            self._follow_up(s.follow_ups, now)
        elif isinstance(s, MarkCancelled):
            if s.error is not None:
                job.errors.append(s.error)
            self._finish(job, JobState.CANCELLED, now)

    def _follow_up(self, requests: Sequence[EnqueueRequest], now: float) -> None:
        for req in requests:
            self._enqueue_one(req, now, bounded=False)

    @staticmethod
    def _clear_lease(job: _Job) -> None:
        job.lease_token = None
        job.lease_expires = None

    def _finish(self, job: _Job, state: JobState, now: float) -> None:
        """Move a job to a final state and free what it held (key slot, dedupe key)."""
        held_slot = job.state is not JobState.BLOCKED
        self._clear_lease(job)
        job.finished_at = now
        job.expires_at = now + (job.dead_ttl_s if state is JobState.DEAD else job.result_ttl_s)
        heapq.heappush(self._expiring, (job.expires_at, job.id))
        c = self._counter(job)
        c.system_s += now - job.enqueued_at
        c.in_system -= 1
        c.in_system_enq_s -= job.enqueued_at - STATS_EPOCH
        if state is JobState.SUCCEEDED:
            c.succeeded += 1
        elif state is JobState.DEAD:
            c.dead += 1
        else:
            c.cancelled += 1
        dedupe = (job.queue, job.dedupe_key or "")
        if job.dedupe_key is not None and self._dedupe.get(dedupe) == job.id:
            del self._dedupe[dedupe]
        if job.key is not None:
            self._free_key(job, held_slot, now)
        self._move(job, state)

    def _free_key(self, job: _Job, held_slot: bool, now: float) -> None:
        assert job.key is not None
        slot = self._keys.get((job.queue, job.key))
        if slot is None:
            return
        if held_slot:
            slot.active -= 1
        else:
            slot.blocked.remove(job.id)
        while slot.blocked:
            nxt = self._jobs[slot.blocked[0]]
            if slot.active >= nxt.key_limit:
                break
            slot.blocked.popleft()
            slot.active += 1
            self._place(nxt, now)
        if slot.active == 0 and not slot.blocked:
            del self._keys[job.queue, job.key]

    # ------------------------------------------------------------------ maintenance

    async def recover_expired(self, limit: int = 1000) -> int:
        n = 0
        with self._lock:
            now = self.clock.now()
            while self._leases and self._leases[0][0] <= now and n < limit:
                _, token, job_id = heapq.heappop(self._leases)
                job = self._jobs.get(job_id)
                if job is None or job.state is not JobState.RUNNING or job.lease_token != token:
                    continue
                if job.lease_expires is not None and job.lease_expires > now:
                    continue  # extended since; a newer heap entry covers it
                self._recover(job, now)
                n += 1
        if n:
            self._changed.notify()
        return n

    def _recover(self, job: _Job, now: float) -> None:
        error = ErrorRecord(
            reason="lease_expired",
            message="the worker stopped renewing its lease (crashed, killed or hung)",
            attempt=job.attempts,
            at=now,
            worker_id=job.worker_id or "",
        )
        job.errors.append(error)
        self._clear_lease(job)
        if job.recoveries >= job.max_recoveries:
            self._finish(job, JobState.DEAD, now)
            return
        job.recoveries += 1
        self._counter(job).recovered += 1
        self._move(job, JobState.QUEUED)  # at its old place: it has waited its turn once

    async def prune(self, limit: int = 1000) -> int:
        n = 0
        with self._lock:
            now = self.clock.now()
            while self._expiring and self._expiring[0][0] <= now and n < limit:
                expires_at, job_id = heapq.heappop(self._expiring)
                job = self._jobs.get(job_id)
                if job is not None and job.state.is_final and job.expires_at == expires_at:
                    self._move(job, None)
                    n += 1
            for topic in self._topics.values():
                n += _trim_log(topic, now)
        return n

    async def cancel(self, job_ids: Sequence[str]) -> list[JobState | None]:
        out: list[JobState | None] = []
        with self._lock:
            now = self.clock.now()
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None:
                    out.append(None)
                    continue
                if job.state.is_pending:
                    self._finish(job, JobState.CANCELLED, now)
                elif job.state is JobState.RUNNING:
                    job.cancel_requested = True
                out.append(job.state)
        self._changed.notify()
        return out

    # ------------------------------------------------------------------ results

    def _record(self, job: _Job) -> JobRecord:
        return JobRecord(
            id=job.id,
            queue=job.queue,
            name=job.name,
            kind=job.kind,
            state=job.state,
            payload=job.payload,
            priority=job.priority,
            key=job.key,
            dedupe_key=job.dedupe_key,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            recoveries=job.recoveries,
            enqueued_at=job.enqueued_at,
            run_at=job.run_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            result=job.result,
            errors=list(job.errors),
            progress=job.progress,
            progress_message=job.progress_message,
            cancel_requested=job.cancel_requested,
            worker_id=job.worker_id,
            lease_expires=job.lease_expires,
        )

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        with self._lock:
            return [
                self._record(j) if (j := self._jobs.get(i)) is not None else None for i in job_ids
            ]

    async def wait_job(self, job_id: str, timeout_s: float) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            version = self._changed.version
            record = await self.get_job(job_id)
            remaining = deadline - loop.time()
            if record is None or record.state.is_final or remaining <= 0:
                return record
            await self._changed.wait(remaining, version)

    # ------------------------------------------------------------------ topics

    async def ensure_topic(self, topic: TopicSpec, groups: Sequence[GroupSpec]) -> None:
        with self._lock:
            now = self.clock.now()
            t = self._topics.get(topic.name)
            if t is None:
                t = self._topics[topic.name] = _Topic(topic)
            else:
                t.spec = topic
            for g in groups:
                known = t.groups.get(g.group)
                t.groups[g.group] = (g, known[1] if known else now)
                if known is None and g.from_start:
                    for _, event in t.log:
                        self._deliver(t, g, event, now, suffix=":s")
        self._changed.notify()

    def _deliver(
        self, t: _Topic, g: GroupSpec, event: EventRequest, enqueued_at: float, suffix: str
    ) -> None:
        queue = group_queue(t.spec.name, g.group)
        req = EnqueueRequest(
            id=f"{event.id}:{g.group}{suffix}",
            queue=queue,
            name=t.spec.name,
            kind="event",
            payload=event.payload,
            enqueued_at=enqueued_at,
            key=event.group_keys.get(g.group, event.key),
            max_attempts=g.max_attempts,
            max_recoveries=g.max_recoveries,
            result_ttl_s=g.result_ttl_s,
            dead_ttl_s=g.dead_ttl_s,
        )
        self._enqueue_one(req, self.clock.now(), bounded=False)

    async def publish(self, topic: str, events: Sequence[EventRequest]) -> list[int]:
        offsets: list[int] = []
        with self._lock:
            self.clock.now()
            t = self._topics.get(topic)
            if t is None:
                t = self._topics[topic] = _Topic(TopicSpec(name=topic))
            for event in events:
                offset = t.next_offset
                t.next_offset += 1
                t.log.append((offset, event))
                for g, _ in t.groups.values():
                    self._deliver(t, g, event, event.published_at, suffix="")
                offsets.append(offset)
        self._changed.notify()
        return offsets

    async def replay(
        self,
        topic: str,
        group: str,
        from_offset: int | None = None,
        from_time: float | None = None,
    ) -> int:
        n = 0
        with self._lock:
            now = self.clock.now()
            t = self._topics.get(topic)
            if t is None or group not in t.groups:
                return 0
            g = t.groups[group][0]
            t.replays += 1
            suffix = f":r{t.replays}"
            for offset, event in t.log:
                if from_offset is not None and offset < from_offset:
                    continue
                if from_time is not None and event.published_at < from_time:
                    continue
                self._deliver(t, g, event, now, suffix=suffix)
                n += 1
        self._changed.notify()
        return n

    async def topics(self) -> list[TopicInfo]:
        with self._lock:
            return [
                TopicInfo(
                    name=name,
                    first_offset=t.log[0][0] if t.log else None,
                    last_offset=t.log[-1][0] if t.log else None,
                    retained=len(t.log),
                    groups=[
                        GroupInfo(
                            group=g.group,
                            queue=group_queue(name, g.group),
                            created_at=created,
                            from_start=g.from_start,
                        )
                        for g, created in t.groups.values()
                    ],
                    retention_s=t.spec.retention_s,
                    max_events=t.spec.max_events,
                )
                for name, t in sorted(self._topics.items())
            ]

    # ------------------------------------------------------------------ coordination

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        with self._lock:
            now = self.clock.now()
            held = self._named_leases.get(name)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            self._named_leases[name] = (owner, now + ttl_s)
            return True

    async def release_lease(self, name: str, owner: str) -> bool:
        with self._lock:
            held = self._named_leases.get(name)
            if held is None or held[0] != owner:
                return False
            del self._named_leases[name]
            return True

    async def take_tokens(self, bucket: str, rate: float, burst: float, n: float = 1.0) -> float:
        with self._lock:
            now = self.clock.now()
            tokens, at = self._buckets.get(bucket, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - at) * rate)
            at = max(at, now)  # a call stamped earlier than the last refill adds nothing
            if tokens >= n:
                self._buckets[bucket] = (tokens - n, at)
                return 0.0
            self._buckets[bucket] = (tokens, at)
            return (n - tokens) / rate

    async def kv_get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._kv.get(key)
            if item is None or (item[1] is not None and item[1] <= self.clock.now()):
                return None
            return item[0]

    async def kv_set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        with self._lock:
            expires = None if ttl_s is None else self.clock.now() + ttl_s
            self._kv[key] = (value, expires)

    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        with self._lock:
            now = self.clock.now()
            self._workers[info.id] = (msgspec.structs.replace(info, last_seen=now), now + ttl_s)

    async def unregister_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    async def workers(self) -> list[WorkerInfo]:
        with self._lock:
            now = self.clock.now()
            return [info for info, expires in self._workers.values() if expires > now]

    # ------------------------------------------------------------------ inspection

    async def queues(self) -> list[str]:
        with self._lock:
            return sorted(self._counts)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._lock:
            now = self.clock.now()
            names = sorted(self._counts) if queues is None else list(queues)
            return [self._queue_stats(q, now) for q in names]

    def _queue_stats(self, queue: str, now: float) -> QueueStats:
        counts = self._counts.get(queue, {})
        by_task = {name: c for (q, name), c in self._counters.items() if q == queue}
        total = sum(by_task.values(), Counters())
        pending = [
            j.enqueued_at for j in self._jobs.values() if j.queue == queue and j.state.is_pending
        ]
        return QueueStats(
            queue=queue,
            at=now,
            counts=StateCounts(**{s.value: n for s, n in counts.items()}),
            counters=msgspec.structs.replace(total),
            by_task={k: msgspec.structs.replace(v) for k, v in by_task.items()},
            oldest_pending_at=min(pending) if pending else None,
        )

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        with self._lock:
            before = int(cursor) if cursor else None
            found = [
                j
                for j in self._jobs.values()
                if (queue is None or j.queue == queue)
                and (state is None or j.state is state)
                and (name is None or j.name == name)
                and (before is None or j.seq < before)
            ]
            found.sort(key=lambda j: j.seq, reverse=True)
            page = found[:limit]
            more = len(found) > limit
            return JobPage(
                [self._record(j) for j in page], str(page[-1].seq) if more and page else None
            )

    async def timings(self, queue: str, since: float, limit: int = 1000) -> list[Timing]:
        with self._lock:
            done = [
                j
                for j in self._jobs.values()
                if j.queue == queue
                and j.state in (JobState.SUCCEEDED, JobState.DEAD)
                and j.finished_at is not None
                and j.finished_at >= since
                and j.started_at is not None
            ]
            done.sort(key=lambda j: j.finished_at or 0.0, reverse=True)
            return [
                Timing(
                    j.name,
                    j.state,
                    j.enqueued_at,
                    j.due_at,
                    j.started_at or 0.0,
                    j.finished_at or 0.0,
                )
                for j in done[:limit]
            ]

    async def requeue(self, job_ids: Sequence[str]) -> int:
        n = 0
        with self._lock:
            now = self.clock.now()
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.state not in (JobState.DEAD, JobState.CANCELLED):
                    continue
                self._move(job, None)
                self._reset_for_requeue(job, now)
                self._admit(job, now)
                n += 1
        self._changed.notify()
        return n

    def _reset_for_requeue(self, job: _Job, now: float) -> None:
        job.state = JobState.QUEUED  # _admit counts it from here
        job.attempts = job.recoveries = 0
        job.waited = job.cancel_requested = False
        job.started_at = job.finished_at = job.expires_at = None
        job.result = None
        job.enqueued_at = job.run_at = job.due_at = now
        job.seq = next(self._seq)
        if job.dedupe_key is not None and (job.queue, job.dedupe_key) in self._dedupe:
            job.dedupe_key = None  # another unfinished job holds it now

    async def delete(self, job_ids: Sequence[str]) -> int:
        n = 0
        with self._lock:
            now = self.clock.now()
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.state is JobState.RUNNING:
                    continue
                if not job.state.is_final:
                    self._finish(job, JobState.CANCELLED, now)
                self._move(job, None)
                n += 1
        self._changed.notify()
        return n

    async def purge(self, queue: str, states: Sequence[JobState] | None = None) -> int:
        wanted = set(states) if states is not None else set(_PENDING)
        wanted.discard(JobState.RUNNING)
        with self._lock:
            ids = [j.id for j in self._jobs.values() if j.queue == queue and j.state in wanted]
        return await self.delete(ids)


def _trim_log(t: _Topic, now: float) -> int:
    n = 0
    spec = t.spec
    while t.log and spec.max_events is not None and len(t.log) > spec.max_events:
        t.log.popleft()
        n += 1
    while (
        t.log and spec.retention_s is not None and t.log[0][1].published_at < now - spec.retention_s
    ):
        t.log.popleft()
        n += 1
    return n
