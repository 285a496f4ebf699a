"""The Redis broker: ``redis://host:6379/0``, ``rediss://`` (TLS), ``redis+sentinel://``.

Every state change is one Lua script (``redis_lua/*.lua``; ``lib.lua`` draws the key
layout and holds the helpers): enqueue, claim, extend and settle take a whole batch per
call, so a batch costs one round trip whatever its size. Python here only packs
arguments, routes calls and unpacks replies.

Scripts: ``open`` picks how they run (``broker.script_mode``). On Redis 7.0 or newer they
are one Redis Functions library (loaded at ``open`` unless the server has it, called
with FCALL): lib.lua is defined once per server instead of on every call (about 12 µs
less Redis time for a one-job enqueue on 7.0). Its name, ``offload_<hash of the code>``,
keeps two offload versions on one server apart (``FUNCTION DELETE`` an old one once none
of its processes is left). On Redis 6.2, for a user who may not run FUNCTION, or with
``?scripts=eval``, each script is sent with lib.lua prepended and called by SHA
(EVALSHA). Both run the same Lua and pass the same conformance suite; a script the
server lost (flushed, restarted empty) is loaded again by the call that finds it gone.
Over ``maxmemory`` both refuse the same calls (each script's Functions flags, see
lib.lua).

The scripts' per-job work avoids what Redis's Lua makes costly (measured with
``benchmarks/redis_script_cost.py``): number arguments to ``redis.call``, which Redis
7.0 formats with %.17g (strings are passed instead), Lua tables built field by field
(batches travel as msgpack sequences read a row at a time; a job's ``m`` is decoded as
one), and replies the script does not use (claim pops with ZRANGE and ZREMRANGEBYRANK,
not ZPOPMIN, whose scores would be formatted and parsed back).

URL options (query parameters): ``prefix`` (default ``offload``) starts every key, so
several applications or test runs can share one database; ``strict=1`` makes ``open``
refuse (``BrokerError``) a server that may lose acknowledged jobs instead of only
warning (see Durability); the rest go to redis-py
(``socket_timeout``, ``socket_connect_timeout``, ``ssl_cert_reqs``, ...). A Sentinel
URL names the Sentinels and the service: ``redis+sentinel://:pw@h1:26379,h2:26379/
mymaster/0`` (``sentinel_password`` for the Sentinels themselves).

Time: every instant stored or compared is the broker clock's ``now``, passed to the
scripts; the server's clock and native expiry are never the rule. Native ``EXPIRE`` is
only a safety net (the TTL plus a day) on finished job records, leases, buckets and kv
entries, and a 60 s life for completion notices.

Ordering: claims take the highest priority first, then the earliest due time (to the
millisecond), then enqueue order. Priorities beyond +-1000 order as +-1000 (the ready
set's score packs priority and due time into one exact double).

Durability: as durable as the server (``appendonly yes`` with ``appendfsync always``
loses nothing acknowledged on a crash; ``everysec`` up to a second). ``open`` logs a
warning when the append-only file is off or ``maxmemory-policy`` is not ``noeviction``
(an evicting policy may drop jobs); with ``?strict=1`` it raises instead. A server at
``maxmemory`` with ``noeviction`` refuses writes whole: enqueue raises
``BrokerUnavailable`` saying so, and nothing stored is dropped.

Wake-ups: enqueue and every script that makes a job claimable push a hint to the
queue's ``wake`` list (at most 32 entries); an idle ``claim`` blocks on those lists with
BLPOP for a bounded slice, then claims again (the hint is never trusted). ``wait_job``
marks the job watched and blocks on its notice list, which the script that finishes it
pushes to.

Memory bounds: a final job lives until ``prune`` runs after its result or dead TTL by
the broker's clock. Its record (payload and result, the bulk) also carries a native
EXPIRE of that TTL plus a day, so it goes even if nothing prunes; its index entry and
sorted-set members (~150 bytes) go with ``prune``. A topic's log is trimmed by
``prune`` to its ``max_events`` and ``retention_s`` and never exceeds about 1,000,000
events (``XADD MAXLEN ~``). Wake lists hold at most 32 entries; notices expire after
60 s. Pending and running jobs are never dropped: bound them with ``max_depth``.
``recover_expired`` and ``prune`` apply their ``limit`` per queue.

Cluster layout
--------------
Every key that one queue's scripts touch carries the queue's hash tag ``{t}``, with
``t`` the part of the name after its last ``@``: a group queue ``group@topic`` is tagged
with its topic, so ``publish`` appends the event and enqueues every group's delivery in
one slot, atomically. Job records live under their queue's tag (``P:{t}:j:<id>``).

The cross-slot pieces, and what they would become on Redis Cluster:

* The id index ``P:id:<id>`` (one small string per job: its queue) lets ``get_jobs``,
  ``cancel``, ``requeue`` and ``delete`` work from an id alone and makes ids unique
  across queues. Standalone and Sentinel keep it inside the scripts, atomically. On a
  Cluster, enqueue would write it with a pipelined ``SET`` after the queue's script
  (ids become unique per queue) and the by-id scripts would run in two steps: ``GET``
  the queue, then the queue's script.
* Follow-ups of an ``Ack``/``Bury`` into another queue are enqueued by the same settle
  script (standalone: atomic). On a Cluster, follow-ups into another slot would go to
  an outbox list in the settling queue's slot, in the same step, and be moved on by a
  relay (at-least-once).
* Registries ``P:queues`` and ``P:topics`` are sets written by plain pipelined SADDs
  beside the scripts: never inside a script, already Cluster-safe.
* An idle ``claim`` on several queues blocks with one BLPOP on all their wake lists; on
  a Cluster that needs one blocking connection per slot.
* Coordination keys (``P:lease:*``, ``P:bucket:*``, ``P:kv:*``) are single keys;
  the worker registry shares the tag ``{workers}``.

Only standalone Redis and Sentinel are supported today; the layout keeps the Cluster
port to the steps above.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from offload.brokers._coalesce import Coalescer
from offload.brokers._redis_admin import RedisAdmin
from offload.brokers._redis_codec import (
    ArgPack,
    deliveries,
    job_record,
    pack_settlement,
    sequence,
)
from offload.brokers._redis_support import tag_of
from offload.brokers.base import EnqueueOutcome, JobState, LeaseState
from offload.clock import Clock, system_clock

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers._redis_core import Call
    from offload.brokers.base import (
        Delivery,
        EnqueueRequest,
        JobRecord,
        Settlement,
    )

__all__ = ["RedisBroker"]

_LEASE = (LeaseState.LOST, LeaseState.OK, LeaseState.CANCEL_REQUESTED)


def _by_tag(queues: Sequence[str]) -> list[list[int]]:
    """Indices grouped by the hash tag of their queue (one script call per group)."""
    first = queues[0] if queues else ""
    if all(q == first for q in queues):
        return [list(range(len(queues)))]
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queues):
        groups.setdefault(tag_of(q), []).append(i)
    return list(groups.values())


class RedisBroker(RedisAdmin):
    """Jobs, results, topics and coordination in Redis (see the module docs)."""

    def __init__(self, url: str, *, clock: Clock = system_clock) -> None:
        super().__init__(url, clock=clock)
        self._enqueues: Coalescer[EnqueueRequest, EnqueueOutcome] = Coalescer(self._enqueue_batch)

    # ------------------------------------------------------------------ enqueue

    async def enqueue(self, requests: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        """Store jobs; concurrent calls share script calls and round trips (group commit)."""
        if not requests:
            return []
        return await self._enqueues.submit(requests)

    async def _enqueue_batch(self, requests: list[EnqueueRequest]) -> list[EnqueueOutcome]:
        _, now = self._now()
        groups = _by_tag([r.queue for r in requests])
        calls: list[Call] = []
        for idxs in groups:
            pack = ArgPack(self._prefix, now, b"")
            pack.args[2] = sequence([pack.request(requests[i]) for i in idxs])
            calls.append(
                ("enqueue", [self._keys.queue(requests[idxs[0]].queue) + "ready"], pack.args)
            )
        extra = self._registrations(self._keys.queues, {r.queue for r in requests})
        results = await self._run_many(calls, extra)
        out: list[EnqueueOutcome | None] = [None] * len(requests)
        for idxs, flat in zip(groups, results, strict=False):
            for j, i in enumerate(idxs):
                status, job_id, depth = flat[3 * j : 3 * j + 3]
                out[i] = EnqueueOutcome(status.decode(), job_id.decode(), depth)
        return out  # type: ignore[return-value]

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
        wake = [self._keys.queue(q) + "wake" for q in queues]
        rounds = 0
        while True:
            got, next_due = await self._claim_now(queues, worker_id, limit, lease_s, rounds)
            rounds += 1
            remaining = deadline - loop.time()
            if got or limit <= 0 or remaining <= 0 or not queues:
                return got
            timeout = remaining if next_due is None else max(0.001, min(remaining, next_due))
            await self._block(wake, timeout, control=True)

    async def _claim_now(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_s: float, turn: int
    ) -> tuple[list[Delivery], float | None]:
        """One pass over the queues, starting at a rotating one so none starves."""
        got: list[Delivery] = []
        next_due: float | None = None
        if not queues:
            return got, None
        start = (self._turn + turn) % len(queues)
        self._turn += 1
        for queue in [*queues[start:], *queues[:start]]:
            if len(got) >= limit:
                break
            now, now_s = self._now()
            base = secrets.randbits(50)
            expires = now + lease_s
            reply = await self._run(
                "claim",
                [self._keys.queue(queue) + "ready"],
                [self._prefix, now_s, queue, limit - len(got), repr(expires), worker_id, base],
            )
            got += deliveries(reply, queue, base, expires)
            if reply[0]:
                due = float(reply[0]) - now
                next_due = due if next_due is None else min(next_due, due)
        return got, next_due

    # ------------------------------------------------------------------ leases

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[LeaseState]:
        if not deliveries:
            return []
        now, now_s = self._now()
        expires = now + lease_s
        groups = _by_tag([d.queue for d in deliveries])
        calls: list[Call] = []
        for idxs in groups:
            rows = [
                (d.job_id, d.queue, str(d.lease_token)) for d in map(deliveries.__getitem__, idxs)
            ]
            key = self._keys.queue(deliveries[idxs[0]].queue) + "running"
            calls.append(("extend", [key], [self._prefix, now_s, repr(expires), sequence(rows)]))
        out: list[LeaseState] = [LeaseState.LOST] * len(deliveries)
        for idxs, codes in zip(groups, await self._run_many(calls), strict=False):
            for i, code in zip(idxs, codes, strict=False):
                out[i] = _LEASE[code]
                if code:
                    deliveries[i].lease_expires = expires
        return out

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        _, now = self._now()
        groups = _by_tag([s.delivery.queue for s in settlements])
        calls: list[Call] = []
        follow: set[str] = set()
        for idxs in groups:
            pack = ArgPack(self._prefix, now, b"")
            items = [pack_settlement(pack, settlements[i]) for i in idxs]
            pack.args[2] = sequence(items)
            for item in items:
                follow.update(r[1] for r in item[6])
            key = self._keys.queue(settlements[idxs[0]].delivery.queue) + "running"
            calls.append(("settle", [key], pack.args))
        results = await self._run_many(calls, self._registrations(self._keys.queues, follow))
        out = [False] * len(settlements)
        for idxs, flags in zip(groups, results, strict=False):
            for i, ok in zip(idxs, flags, strict=False):
                out[i] = bool(ok)
        return out

    async def set_progress(self, delivery: Delivery, value: float, message: str | None) -> bool:
        _, now = self._now()
        key = self._job_key(delivery.queue, delivery.job_id)
        args = [self._prefix, now, str(delivery.lease_token), repr(float(value))]
        args += [message or "", "0" if message is None else "1"]
        return bool(await self._run("progress", [key], args))

    def _job_key(self, queue: str, job_id: str) -> str:
        return f"{self._prefix}:{{{tag_of(queue)}}}:j:{job_id}"

    # ------------------------------------------------------------------ maintenance

    async def recover_expired(self, limit: int = 1000) -> int:
        """Return expired leases to their queues; ``limit`` applies per queue."""
        return await self._per_queue("recover", "running", limit)

    async def prune(self, limit: int = 1000) -> int:
        """Delete final jobs past their TTL (``limit`` per queue), trim topic logs to
        their retention, forget workers whose registration expired."""
        n = await self._per_queue("prune", "expiring", limit)
        n += await self._trim_topics()
        await self._forget_workers()
        return n

    async def _per_queue(self, script: str, route: str, limit: int) -> int:
        queues = await self.queues()
        if not queues:
            return 0
        _, now = self._now()
        calls: list[Call] = [
            (script, [self._keys.queue(q) + route], [self._prefix, now, q, limit]) for q in queues
        ]
        return sum(await self._run_many(calls))

    async def cancel(self, job_ids: Sequence[str]) -> list[JobState | None]:
        if not job_ids:
            return []
        states = await self._by_id("cancel", job_ids)
        return [None if s is None else JobState(s.decode()) for s in states]

    async def _by_id(self, script: str, job_ids: Sequence[str], *head: Any) -> Any:
        """Run a script that finds jobs through the id index (see "Cluster layout")."""
        _, now = self._now()
        return await self._run(
            script, [self._keys.index(job_ids[0])], [self._prefix, now, *head, *job_ids]
        )

    # ------------------------------------------------------------------ results

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        return await self._records(job_ids, watch=False)

    async def _records(self, job_ids: Sequence[str], *, watch: bool) -> list[JobRecord | None]:
        if not job_ids:
            return []
        rows = await self._by_id("jobs", job_ids, "1" if watch else "0")
        return [
            None if v is None else job_record(i, v) for i, v in zip(job_ids, rows, strict=False)
        ]

    async def wait_job(self, job_id: str, timeout_s: float) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            [record] = await self._records([job_id], watch=True)
            remaining = deadline - loop.time()
            if record is None or record.state.is_final or remaining <= 0:
                return record
            notice = self._keys.notice(record.queue, job_id)
            if await self._block([notice], remaining):
                await self._pass_on(notice)

    async def _pass_on(self, notice: str) -> None:
        """Put the notice back for the job's other waiters (it expires in 60 s)."""
        await self._commands(("RPUSH", notice, 1), ("EXPIRE", notice, 60))
