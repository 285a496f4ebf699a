"""The Redis broker's topics, coordination and inspection (the queue path is redis.py)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import msgspec

from offload.brokers._redis_codec import ArgPack, job_record, record_order, timings
from offload.brokers._redis_core import RedisCore
from offload.brokers.base import (
    DAY,
    Counters,
    GroupInfo,
    GroupSpec,
    JobPage,
    JobState,
    QueueStats,
    StateCounts,
    TopicInfo,
    TopicSpec,
    WorkerInfo,
    group_queue,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers._redis_core import Call
    from offload.brokers.base import EventRequest, JobRecord, Timing

__all__ = ["RedisAdmin"]

#: A topic's log never holds more than about this many events (XADD MAXLEN ~).
LOG_CAP = 1_000_000
#: Jobs one list_jobs / purge script call looks at before handing back to Python.
SCAN_BUDGET = 2_000
_PENDING = (JobState.SCHEDULED, JobState.QUEUED, JobState.BLOCKED, JobState.RETRYING)
_FLOAT_COUNTERS = frozenset({"wait_s", "service_s", "system_s", "in_system_enq_s"})
_worker_decode = msgspec.msgpack.Decoder(WorkerInfo).decode
_encode = msgspec.msgpack.encode
_json = msgspec.json.Encoder().encode


def _opt(v: float | None) -> str:
    return "" if v is None else repr(v)


def _group_json(g: GroupSpec) -> str:
    spec = {"a": g.max_attempts, "r": g.max_recoveries, "rt": g.result_ttl_s, "dt": g.dead_ttl_s}
    return json.dumps({**spec, "fs": int(g.from_start)})


class RedisAdmin(RedisCore):
    """Topics, coordination and inspection over the same keys as the queue path."""

    # ------------------------------------------------------------------ topics

    async def ensure_topic(self, topic: TopicSpec, groups: Sequence[GroupSpec]) -> None:
        _, now = self._now()
        args: list[Any] = [self._prefix, now, topic.name]
        args += [_opt(topic.retention_s), "" if topic.max_events is None else topic.max_events]
        for g in groups:
            args += [g.group, _group_json(g)]
        extra: list[tuple[str, ...]] = [("SADD", self._keys.topics, topic.name)]
        if groups:
            extra.append(
                ("SADD", self._keys.queues, *(group_queue(topic.name, g.group) for g in groups))
            )
        key = self._keys.topic(topic.name) + "meta"
        await self._run_many([("ensure_topic", [key], args)], extra)

    async def publish(self, topic: str, events: Sequence[EventRequest]) -> list[int]:
        if not events:
            return []
        _, now = self._now()
        pack = ArgPack(self._prefix, now, topic, LOG_CAP, repr(7 * DAY), b"")
        rows = [
            (e.id, e.published_at, e.key, _json(e.group_keys).decode() if e.group_keys else None)
            for e in events
        ]
        pack.args[5] = pack.encode(rows)
        pack.args += [e.payload for e in events]
        call: Call = ("publish", [self._keys.topic(topic) + "meta"], pack.args)
        [offsets, *_] = await self._run_many(
            [call], self._registrations(self._keys.topics, [topic])
        )
        return list(offsets)

    async def replay(
        self,
        topic: str,
        group: str,
        from_offset: int | None = None,
        from_time: float | None = None,
    ) -> int:
        _, now = self._now()
        start = "" if from_offset is None else str(int(from_offset))
        args = [self._prefix, now, topic, group, start, _opt(from_time)]
        return int(await self._run("replay", [self._keys.topic(topic) + "meta"], args))

    async def _members(self, registry: str) -> list[str]:
        [names] = await self._commands(("SMEMBERS", registry))
        return sorted(n.decode() for n in names)

    async def topics(self) -> list[TopicInfo]:
        names = await self._members(self._keys.topics)
        commands = []
        for name in names:
            tb = self._keys.topic(name)
            commands += [
                ("HMGET", tb + "meta", "ret", "max"),
                ("XLEN", tb + "log"),
                ("XRANGE", tb + "log", "-", "+", "COUNT", 1),
                ("XREVRANGE", tb + "log", "+", "-", "COUNT", 1),
                ("HGETALL", tb + "groups"),
                ("HGETALL", tb + "gc"),
            ]
        replies = await self._commands(*commands) if commands else []
        return [_topic_info(n, replies[6 * i : 6 * i + 6]) for i, n in enumerate(names)]

    async def _trim_topics(self) -> int:
        names = await self._members(self._keys.topics)
        if not names:
            return 0
        _, now = self._now()
        calls: list[Call] = [
            ("trim_topic", [self._keys.topic(n) + "log"], [self._prefix, now, n]) for n in names
        ]
        return sum(await self._run_many(calls))

    # ------------------------------------------------------------------ coordination

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        _, now = self._now()
        return bool(
            await self._run(
                "lease", [self._keys.lease(name)], [self._prefix, now, owner, repr(ttl_s)]
            )
        )

    async def release_lease(self, name: str, owner: str) -> bool:
        _, now = self._now()
        return bool(
            await self._run("release_lease", [self._keys.lease(name)], [self._prefix, now, owner])
        )

    async def take_tokens(self, bucket: str, rate: float, burst: float, n: float = 1.0) -> float:
        _, now = self._now()
        args = [self._prefix, now, repr(float(rate)), repr(float(burst)), repr(float(n))]
        return float(await self._run("tokens", [self._keys.bucket(bucket)], args))

    async def kv_get(self, key: str) -> bytes | None:
        [(value, expires)] = await self._commands(("HMGET", self._keys.kv(key), "v", "x"))
        if value is None or (expires and float(expires) <= self.clock.now()):
            return None
        return bytes(value)

    async def kv_set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        k = self._keys.kv(key)
        if ttl_s is None:
            await self._commands(("DEL", k), ("HSET", k, "v", value), atomic=True)
            return
        expires = repr(self.clock.now() + ttl_s)
        await self._commands(
            ("HSET", k, "v", value, "x", expires),
            ("EXPIRE", k, math.ceil(ttl_s + DAY)),
            atomic=True,
        )

    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        now = self.clock.now()
        blob = _encode(msgspec.structs.replace(info, last_seen=now))
        await self._commands(
            ("HSET", self._keys.workers_info, info.id, blob),
            ("ZADD", self._keys.workers_exp, repr(now + ttl_s), info.id),
            atomic=True,
        )

    async def unregister_worker(self, worker_id: str) -> None:
        await self._commands(
            ("HDEL", self._keys.workers_info, worker_id),
            ("ZREM", self._keys.workers_exp, worker_id),
            atomic=True,
        )

    async def workers(self) -> list[WorkerInfo]:
        now = self.clock.now()
        [ids] = await self._commands(("ZRANGEBYSCORE", self._keys.workers_exp, f"({now!r}", "+inf"))
        if not ids:
            return []
        [blobs] = await self._commands(("HMGET", self._keys.workers_info, *ids))
        return [_worker_decode(b) for b in blobs if b is not None]

    async def _forget_workers(self) -> None:
        keys = [self._keys.workers_exp, self._keys.workers_info]
        await self._run("forget_workers", keys, [self._prefix, self._now()[1]])

    # ------------------------------------------------------------------ inspection

    async def queues(self) -> list[str]:
        return await self._members(self._keys.queues)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        names = await self.queues() if queues is None else list(queues)
        now = self.clock.now()
        commands = []
        for q in names:
            base = self._keys.queue(q)
            commands += [
                ("HGETALL", base + "counts"),
                ("HGETALL", base + "ctr"),
                ("ZRANGE", base + "pend", 0, 0, "WITHSCORES"),
            ]
        replies = await self._commands(*commands) if commands else []
        return [_queue_stats(q, now, *replies[3 * i : 3 * i + 3]) for i, q in enumerate(names)]

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        tops: dict[str, str] = json.loads(cursor) if cursor else {}
        names = [queue] if queue is not None else await self.queues()
        if cursor:
            names = [q for q in names if q in tops]
        found: list[tuple[str, list[Any], bool]] = []
        for q in names:
            records, exhausted = await self._scan(q, tops.get(q, ""), limit + 1, state, name)
            found += [(q, v, exhausted) for v in records]
        found.sort(key=lambda item: record_order(item[1]), reverse=True)
        page = found[:limit]
        following: dict[str, str] = {}
        for q, v, _ in page:
            following[q] = v[15].decode()
        for q, _v, _exhausted in found[limit:]:
            following.setdefault(q, tops.get(q, ""))
        jobs: list[JobRecord] = [job_record(_record_id(v), v) for _, v, _ in page]
        return JobPage(jobs, json.dumps(following) if len(found) > limit else None)

    async def _scan(
        self, queue: str, top: str, want: int, state: JobState | None, name: str | None
    ) -> tuple[list[list[Any]], bool]:
        """Up to ``want`` matching records of one queue below seq ``top``; and whether the
        scan reached the queue's oldest job."""
        records: list[list[Any]] = []
        key = self._keys.queue(queue) + "all"
        while len(records) < want:
            _, now = self._now()
            args = [self._prefix, now, queue, top, want - len(records), state or "", name or ""]
            reply = await self._run("list_jobs", [key], [*args, SCAN_BUDGET])
            records += reply[1:]
            top = reply[0].decode()
            if not top:
                return records, True
        return records, False

    async def timings(self, queue: str, since: float, limit: int = 1000) -> list[Timing]:
        _, now = self._now()
        args = [self._prefix, now, queue, repr(since), limit]
        return timings(await self._run("timings", [self._keys.queue(queue) + "done"], args))

    async def requeue(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        _, now = self._now()
        return int(
            await self._run(
                "requeue", [self._keys.index(job_ids[0])], [self._prefix, now, *job_ids]
            )
        )

    async def delete(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        _, now = self._now()
        args = [self._prefix, now, "ids", *job_ids]
        [n] = await self._run("delete", [self._keys.index(job_ids[0])], args)
        return int(n)

    async def purge(self, queue: str, states: Sequence[JobState] | None = None) -> int:
        wanted = [s.value for s in (states if states is not None else _PENDING)]
        if JobState.RUNNING.value in wanted:
            wanted.remove(JobState.RUNNING.value)
        key = self._keys.queue(queue) + "all"
        total, top = 0, ""
        while True:
            _, now = self._now()
            args = [self._prefix, now, "queue", queue, top, SCAN_BUDGET, *wanted]
            n, nxt = await self._run("delete", [key], args)
            total += int(n)
            top = nxt.decode()
            if not top:
                return total


def _record_id(v: list[Any]) -> str:
    return str(v[16].decode())


def _topic_info(name: str, r: list[Any]) -> TopicInfo:
    (ret, mx), retained, first, last, groups, created = r
    infos = [
        GroupInfo(
            group=g.decode(),
            queue=group_queue(name, g.decode()),
            created_at=float(created.get(g, 0)),
            from_start=bool(json.loads(spec)["fs"]),
        )
        for g, spec in sorted(groups.items())
    ]
    return TopicInfo(
        name=name,
        first_offset=int(first[0][0].split(b"-")[0]) if first else None,
        last_offset=int(last[0][0].split(b"-")[0]) if last else None,
        retained=retained,
        groups=infos,
        retention_s=float(ret) if ret else None,
        max_events=int(mx) if mx else None,
    )


def _queue_stats(
    queue: str, now: float, counts: dict[bytes, bytes], ctr: dict[bytes, bytes], oldest: list[Any]
) -> QueueStats:
    by_task: dict[str, dict[str, Any]] = {}
    for field, value in ctr.items():
        counter, _, task = field.decode().partition(":")
        by_task.setdefault(task, {})[counter] = (
            float(value) if counter in _FLOAT_COUNTERS else int(value)
        )
    tasks = {task: Counters(**fields) for task, fields in by_task.items()}
    return QueueStats(
        queue=queue,
        at=now,
        counts=StateCounts(**{k.decode(): int(v) for k, v in counts.items()}),
        counters=sum(tasks.values(), Counters()),
        by_task=tasks,
        oldest_pending_at=float(oldest[0][1]) if oldest else None,
    )
