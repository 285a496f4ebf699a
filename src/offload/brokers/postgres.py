"""The PostgreSQL broker: distributed, durable at commit, with transactional enqueue.

``postgresql://user@host/db?schema=offload`` keeps everything in one schema of the
database (created on first ``open()``, upgraded by ``offload db migrate``). Each protocol
operation is one statement, and each batch one round trip: the logic that must be atomic
lives in SQL functions (``postgres_sql/``), so this module only builds arguments and
reads rows.

- Claims take ``FOR UPDATE SKIP LOCKED`` row locks through partial indexes, so
  concurrent workers never wait for each other and claim time does not grow with the
  number of queued or delayed jobs.
- State counts and Little's-Law counters are rolled up per statement by triggers, into
  rows sharded by backend, in the same transaction as the change.
- LISTEN/NOTIFY wakes idle claims and result waiters; it is only a hint, and polling
  with backoff covers a lost connection.
- ``enqueue(..., connection=conn)`` and ``publish(..., connection=conn)`` write inside
  the caller's own transaction (the outbox pattern): the job exists if and only if that
  transaction commits. ``enqueue_sync_in`` / ``publish_sync_in`` do the same on a
  synchronous psycopg connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from offload.brokers import _pg_rows as rows
from offload.brokers._coalesce import Coalescer
from offload.brokers._pg_conn import PgSettings, map_error, parse_url
from offload.brokers._pg_listen import Listener
from offload.brokers._pg_results import Rereads
from offload.brokers._pg_schema import check_schema, migrate, schema_state
from offload.brokers._pg_sql import Statements
from offload.brokers.base import (
    BrokerBase,
    Capabilities,
    Delivery,
    EnqueueOutcome,
    EnqueueRequest,
    EventRequest,
    GroupSpec,
    JobPage,
    JobRecord,
    JobState,
    LeaseState,
    QueueStats,
    Settlement,
    Timing,
    TopicInfo,
    TopicSpec,
    WorkerInfo,
)
from offload.clock import Clock, system_clock
from offload.errors import BrokerError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
    from typing import TypeAlias

    _Params: TypeAlias = Sequence[Any] | Mapping[str, Any] | None

__all__ = ["PostgresBroker"]

_PENDING = [s.value for s in JobState if s.is_pending]
_POLL_MIN_S = 0.05
_POLL_MAX_S = 1.0
#: With LISTEN working, idle waits still re-check this often (a notification can be lost
#: while the listening connection reconnects).
_SAFETY_POLL_S = 5.0
_LISTEN_READY_S = 1.0
#: A result wait marks its queue as awaited until this long past its own deadline (a
#: margin for clock skew between machines), and renews the mark only when it runs short.
_AWAIT_MARGIN_S = 60.0
_RETRIES = 3
#: prune() vacuums by itself only where autovacuum will not, at most this often, once
#: this many dead rows piled up in a table (and a tenth of its live rows).
_VACUUM_EVERY_S = 30.0
_VACUUM_MIN_DEAD = 10_000
_decode_worker = msgspec.json.Decoder(WorkerInfo).decode
_encode_json = msgspec.json.Encoder().encode
_T = TypeVar("_T")


class PostgresBroker(BrokerBase):
    """Jobs, topics and coordination in a PostgreSQL schema (see the module docs)."""

    def __init__(self, url: str, *, clock: Clock = system_clock) -> None:
        self.url = url
        self.clock = clock
        self.settings: PgSettings = parse_url(url)
        self.schema = self.settings.schema
        self.capabilities = Capabilities(
            name="postgres",
            durable=True,
            shared=True,
            push_wakeups=True,
            transactional_enqueue=True,
            multi_machine=True,
        )
        self._enqueues: Coalescer[EnqueueRequest, EnqueueOutcome] = Coalescer(self._enqueue_batch)
        self._sql = Statements(self.schema)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._listener = Listener(self.settings.conninfo, self.schema)
        self._checking: asyncio.Task[None] | None = None
        self._awaited: dict[str, float] = {}
        self._rereads = Rereads(self.get_jobs)
        self._vacuumed_at = float("-inf")
        self._rr = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, install the schema if it is missing, and check its version.

        Raises:
            BrokerUnavailable: the server cannot be reached (fails fast on a closed port).
            SchemaOutOfDate: the schema is behind this offload: run `offload db migrate`.
            ConfigurationError: libpq rejected a URL parameter.
        """
        if self._pool is not None:
            return
        async with self._connect() as conn:
            state = await self._guard(schema_state(conn, self.schema))
            if state is None:
                await self._guard(migrate(conn, self.schema, self.clock.now()))
            else:
                check_schema(state, self.schema, self.settings.redacted)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.settings.conninfo,
            min_size=self.settings.pool_min_size,
            max_size=max(self.settings.pool_min_size, self.settings.pool_max_size),
            timeout=self.settings.pool_timeout,
            kwargs={"autocommit": True},
            name=f"offload-{self.schema}",
            open=False,
        )
        try:
            await self._guard(pool.open(wait=True, timeout=self.settings.pool_timeout))
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        await self._listener.stop()
        if self._checking is not None:
            self._checking.cancel()
            self._checking = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> list[int]:
        """Create or upgrade the schema to this offload's version; return the migrations
        applied (empty when it was up to date). Safe to run while workers are running."""
        async with self._connect() as conn:
            return await self._guard(migrate(conn, self.schema, self.clock.now()))

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A dedicated connection (schema work), failing fast with a clear message."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.settings.conninfo, autocommit=True)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(
                f"The broker URL {self.settings.redacted} was refused: {exc}. offload's own "
                "parameters are schema, pool_min_size, pool_max_size and pool_timeout; "
                "every other one goes to libpq."
            ) from exc
        except psycopg.Error as exc:
            raise map_error(exc, self.settings) from exc
        async with conn:
            yield conn

    async def _guard(self, work: Awaitable[_T]) -> _T:
        try:
            return await work
        except (psycopg.Error, PoolTimeout) as exc:
            raise map_error(exc, self.settings) from exc

    # ------------------------------------------------------------------ running SQL

    def _require_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise BrokerError(
                f"The broker {self.settings.redacted} is not open: await broker.open() first."
            )
        return self._pool

    async def _fetch(
        self,
        name: str,
        params: _Params | Callable[[float], _Params] = None,
        *,
        binary: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Run one named statement on a pooled connection (autocommit: one transaction).

        ``params`` may be a function of the clock's ``now``, called once a connection is
        in hand: after a wait for the pool (a restarting server) leases are then granted
        and fenced by the time the statement runs, not the time it was asked for.

        Deadlocks and serialization failures roll the whole statement back, so they are
        retried here; every other driver error is mapped and raised.
        """
        pool = self._require_pool()
        sql = self._sql[name]
        for attempt in range(1, _RETRIES + 1):
            try:
                async with pool.connection() as conn:
                    bound = params(self.clock.now()) if callable(params) else params
                    cur = await conn.execute(sql, bound, binary=binary)
                    return await cur.fetchall() if cur.description is not None else []
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                if attempt == _RETRIES:
                    raise map_error(exc, self.settings) from exc
            except (psycopg.Error, PoolTimeout) as exc:
                self._recheck_pool(exc)
                raise map_error(exc, self.settings) from exc
        raise AssertionError("unreachable")

    async def _fetch_in(
        self, conn: psycopg.AsyncConnection[Any], name: str, params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """Run one named statement on the caller's connection, inside its transaction."""
        try:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(self._sql[name], params)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise map_error(exc, self.settings) from exc

    def _fetch_sync_in(
        self, conn: psycopg.Connection[Any], name: str, params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """``_fetch_in`` for a synchronous connection."""
        try:
            with conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(self._sql[name], params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise map_error(exc, self.settings) from exc

    def _recheck_pool(self, exc: BaseException) -> None:
        """After a connection failure, weed out the pool's other dead connections now
        rather than one failed call at a time."""
        if not isinstance(exc, psycopg.OperationalError) or self._pool is None:
            return
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(
                _quietly(self._pool.check()), name=f"offload-pool-check-{self.schema}"
            )

    async def _one(self, name: str, params: Sequence[Any]) -> Any:
        [(value,)] = await self._fetch(name, params)
        return value

    # ------------------------------------------------------------------ queue ops

    async def enqueue(
        self,
        requests: Sequence[EnqueueRequest],
        *,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[EnqueueOutcome]:
        """Store jobs (see :class:`~offload.brokers.base.QueueOps`).

        With ``connection`` (a psycopg ``AsyncConnection`` to the same database), the
        jobs are written inside that connection's current transaction: they exist, and
        wake workers, only if it commits. That needs no ``open()``: a web process can
        enqueue through its own connections only.

        Without ``connection``, concurrent calls share statements (group commit): every
        call that arrives while one is being written joins the next, so many one-job
        enqueues share one transaction and one WAL flush.
        """
        if not requests:
            return []
        if connection is None:
            return await self._enqueues.submit(requests)
        params = rows.enqueue_params(requests, self.clock.now())
        found = await self._fetch_in(connection, "enqueue", params)
        return [EnqueueOutcome(status, job_id, depth) for status, job_id, depth in found]

    async def _enqueue_batch(self, requests: list[EnqueueRequest]) -> list[EnqueueOutcome]:
        found = await self._fetch("enqueue", lambda now: rows.enqueue_params(requests, now))
        return [EnqueueOutcome(status, job_id, depth) for status, job_id, depth in found]

    def enqueue_sync_in(
        self, connection: psycopg.Connection[Any], requests: Sequence[EnqueueRequest]
    ) -> list[EnqueueOutcome]:
        """``enqueue`` inside the current transaction of a synchronous psycopg connection."""
        if not requests:
            return []
        params = rows.enqueue_params(requests, self.clock.now())
        found = self._fetch_sync_in(connection, "enqueue", params)
        return [EnqueueOutcome(status, job_id, depth) for status, job_id, depth in found]

    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_s: float,
        wait_s: float = 0.0,
    ) -> list[Delivery]:
        if not queues or limit <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        keys = [f"q:{q}" for q in queues]
        if wait_s > 0:
            await self._listener.start(min(wait_s, _LISTEN_READY_S))
        backoff = _POLL_MIN_S
        while True:
            seen = self._listener.versions(keys)
            got = await self._claim_now(queues, worker_id, limit, lease_s)
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            timeout = await self._idle_timeout(queues, remaining, backoff)
            await self._listener.wait(keys, seen, timeout)
            backoff = min(backoff * 2, _POLL_MAX_S)

    async def _claim_now(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_s: float
    ) -> list[Delivery]:
        start = self._rr % len(queues)
        self._rr += 1
        order = [*queues[start:], *queues[:start]]
        found = await self._fetch(
            "claim", lambda now: [order, worker_id, limit, lease_s, now], binary=True
        )
        return [rows.delivery(r) for r in found]

    async def _idle_timeout(self, queues: Sequence[str], remaining: float, backoff: float) -> float:
        """How long an idle claim may sleep: until woken, the next delayed job is due,
        the poll interval passes (backoff without LISTEN), or the wait ends."""
        timeout = min(remaining, _SAFETY_POLL_S if self._listener.listening else backoff)
        due = await self._one("next_due", [list(queues)])
        if due is not None:
            timeout = min(timeout, max(0.001, due - self.clock.now()))
        return timeout

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[LeaseState]:
        if not deliveries:
            return []
        ids = [d.job_id for d in deliveries]
        tokens = [d.lease_token for d in deliveries]
        found = await self._fetch(
            "extend", lambda now: {"now": now, "lease_s": lease_s, "ids": ids, "tokens": tokens}
        )
        held = {(r[0], r[1]): (r[2], r[3]) for r in found}
        out = []
        for d in deliveries:
            state = held.get((d.job_id, d.lease_token))
            if state is None:
                out.append(LeaseState.LOST)
                continue
            d.lease_expires = state[1]
            out.append(LeaseState.CANCEL_REQUESTED if state[0] else LeaseState.OK)
        return out

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        params = rows.settle_params(settlements, 0.0)  # now (index 6) is set at the call
        name = "settle" if len(params) == 7 else "settle_follow_ups"
        found = await self._fetch(name, lambda now: [*params[:6], now, *params[7:]])
        return [r[0] for r in found]

    async def recover_expired(self, limit: int = 1000) -> int:
        [(n,)] = await self._fetch("recover_expired", lambda now: [limit, now])
        return int(n)

    async def prune(self, limit: int = 1000) -> int:
        """Delete final jobs past their TTL and events past retention (see
        :class:`~offload.brokers.base.QueueOps`), at most ``limit`` of each per call.

        Where the server's autovacuum is off, it also VACUUMs tables whose dead rows piled
        up, since only a vacuum makes deleted rows' space reusable and clears the dead
        index entries claims would otherwise step over.
        """
        pruned = int(await self._one("prune", [limit, self.clock.now()]))
        await self._vacuum_if_due()
        return pruned

    async def _vacuum_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._vacuumed_at < _VACUUM_EVERY_S:
            return
        self._vacuumed_at = now
        for (table,) in await self._fetch("vacuum_due", [_VACUUM_MIN_DEAD]):
            sql = f'VACUUM (SKIP_LOCKED) "{self.schema}"."{table}"'
            async with self._require_pool().connection() as conn:
                await self._guard(conn.execute(sql.encode()))

    async def cancel(self, job_ids: Sequence[str]) -> list[JobState | None]:
        if not job_ids:
            return []
        found = await self._fetch("cancel", [list(job_ids), self.clock.now()])
        return [None if state is None else JobState(state) for (state,) in found]

    async def set_progress(self, delivery: Delivery, value: float, message: str | None) -> bool:
        params = [value, message, delivery.job_id, delivery.lease_token]
        return bool(await self._fetch("set_progress", lambda now: [*params, now]))

    # ------------------------------------------------------------------ results

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        found = {r[0]: r for r in await self._fetch("get_jobs", [list(job_ids)], binary=True)}
        return [rows.job_record(r) if (r := found.get(i)) is not None else None for i in job_ids]

    async def wait_job(self, job_id: str, timeout_s: float) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        record = await self.get_job(job_id)
        if record is None or record.state.is_final or timeout_s <= 0:
            return record
        await self._listener.start(min(timeout_s, _LISTEN_READY_S))
        await self._await_results(record.queue, timeout_s)
        keys = [f"d:{record.queue}"]
        backoff = _POLL_MIN_S
        while True:
            seen = self._listener.versions(keys)
            record = await self._rereads.get(job_id)
            remaining = deadline - loop.time()
            if record is None or record.state.is_final or remaining <= 0:
                return record
            await self._listener.wait(keys, seen, min(remaining, backoff))
            # Short polls first: a job may end just as the wait is being registered.
            cap = _SAFETY_POLL_S if self._listener.listening else _POLL_MAX_S
            backoff = min(backoff * 2, cap)

    async def _await_results(self, queue: str, timeout_s: float) -> None:
        """Make jobs ending in ``queue`` notify for at least ``timeout_s`` from now."""
        needed = self.clock.now() + timeout_s
        if self._awaited.get(queue, float("-inf")) >= needed:
            return
        until = needed + _AWAIT_MARGIN_S
        await self._fetch("await_results", [queue, until])
        self._awaited[queue] = until

    # ------------------------------------------------------------------ topics

    async def ensure_topic(self, topic: TopicSpec, groups: Sequence[GroupSpec]) -> None:
        params = [
            topic.name,
            topic.retention_s,
            topic.max_events,
            [g.group for g in groups],
            [g.from_start for g in groups],
            [g.max_attempts for g in groups],
            [g.max_recoveries for g in groups],
            [g.result_ttl_s for g in groups],
            [g.dead_ttl_s for g in groups],
            self.clock.now(),
        ]
        await self._fetch("ensure_topic", params)

    async def publish(
        self,
        topic: str,
        events: Sequence[EventRequest],
        *,
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Append events and fan them out (see :class:`~offload.brokers.base.TopicOps`).

        With ``connection``, inside that connection's current transaction.
        """
        if not events:
            return []
        params = self._publish_params(topic, events)
        if connection is None:
            found = await self._fetch("publish", params)
        else:
            found = await self._fetch_in(connection, "publish", params)
        return [offset for (offset,) in found]

    def publish_sync_in(
        self, connection: psycopg.Connection[Any], topic: str, events: Sequence[EventRequest]
    ) -> list[int]:
        """``publish`` inside the current transaction of a synchronous psycopg connection."""
        if not events:
            return []
        found = self._fetch_sync_in(connection, "publish", self._publish_params(topic, events))
        return [offset for (offset,) in found]

    def _publish_params(self, topic: str, events: Sequence[EventRequest]) -> list[Any]:
        return [
            topic,
            [e.id for e in events],
            [e.payload for e in events],
            [e.key for e in events],
            [_encode_json(e.group_keys).decode() if e.group_keys else None for e in events],
            [e.published_at for e in events],
            self.clock.now(),
        ]

    async def replay(
        self,
        topic: str,
        group: str,
        from_offset: int | None = None,
        from_time: float | None = None,
    ) -> int:
        params = [topic, group, from_offset, from_time, self.clock.now()]
        return int(await self._one("replay", params))

    async def topics(self) -> list[TopicInfo]:
        return [rows.topic_info(r) for r in await self._fetch("topics")]

    # ------------------------------------------------------------------ coordination

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = self.clock.now()
        return bool(await self._fetch("acquire_lease", [name, owner, now + ttl_s, now]))

    async def release_lease(self, name: str, owner: str) -> bool:
        return bool(await self._fetch("release_lease", [name, owner]))

    async def take_tokens(self, bucket: str, rate: float, burst: float, n: float = 1.0) -> float:
        params = [bucket, rate, burst, n, self.clock.now()]
        return float(await self._one("take_tokens", params))

    async def kv_get(self, key: str) -> bytes | None:
        found = await self._fetch("kv_get", [key, self.clock.now()])
        return bytes(found[0][0]) if found else None

    async def kv_set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        expires = None if ttl_s is None else self.clock.now() + ttl_s
        await self._fetch("kv_set", [key, value, expires])

    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        now = self.clock.now()
        encoded = _encode_json(msgspec.structs.replace(info, last_seen=now))
        await self._fetch("register_worker", [info.id, encoded, now, now + ttl_s])

    async def unregister_worker(self, worker_id: str) -> None:
        await self._fetch("unregister_worker", [worker_id])

    async def workers(self) -> list[WorkerInfo]:
        found = await self._fetch("workers", [self.clock.now()])
        return [_decode_worker(info) for info, _ in found]

    # ------------------------------------------------------------------ inspection

    async def queues(self) -> list[str]:
        return [queue for (queue,) in await self._fetch("queues")]

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        found = await self._fetch("stats", [None if queues is None else list(queues)])
        at = self.clock.now()
        by_queue: dict[str, list[tuple[Any, ...]]] = {}
        for r in found:
            by_queue.setdefault(r[0], []).append(r)
        names = sorted(by_queue) if queues is None else list(queues)
        return [rows.queue_stats(q, by_queue.get(q, []), at) for q in names]

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        params = {
            "queue": queue,
            "state": None if state is None else state.value,
            "name": name,
            "before": int(cursor) if cursor else None,
            "limit": limit + 1,
        }
        found = await self._fetch("list_jobs", params, binary=True)
        page = found[:limit]
        more = len(found) > limit and bool(page)
        return JobPage([rows.job_record(r) for r in page], str(page[-1][-1]) if more else None)

    async def timings(self, queue: str, since: float, limit: int = 1000) -> list[Timing]:
        found = await self._fetch("timings", [queue, since, limit])
        return [Timing(r[0], JobState(r[1]), r[2], r[3], r[4], r[5]) for r in found]

    async def requeue(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(await self._one("requeue", [list(job_ids), self.clock.now()]))

    async def delete(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(await self._one("delete_jobs", [list(job_ids), self.clock.now()]))

    async def purge(self, queue: str, states: Sequence[JobState] | None = None) -> int:
        wanted = _PENDING if states is None else [JobState(s).value for s in states]
        return int(await self._one("purge", [queue, wanted, self.clock.now()]))


async def _quietly(work: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await work
