"""The SQLite broker: offload's default store, embedded and durable, shared by processes.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; options in the query
string (see :class:`~offload.brokers._sqlite_db.SqliteSettings`)::

    sqlite:///offload.db                      WAL, synchronous=FULL: survives power loss
    sqlite:///offload.db?synchronous=NORMAL   faster commits; may lose the last ones on
                                              power loss (never on a process crash)

How it is built:

* **One thread per broker.** Each instance owns one connection, used only from its own
  single-thread executor; the event loop never waits on disk I/O or on a lock held by
  another process.
* **One transaction per call.** Every write is a ``BEGIN IMMEDIATE`` transaction (the
  write lock is taken up front, so two processes cannot claim the same job), batched:
  enqueue of N, claim of N and settle of N are one transaction each. The statements live
  in ``sqlite_sql/queries.sql``; the schema in numbered migrations versioned by
  ``PRAGMA user_version``, applied on open.
* **fsync where a promise needs it.** Enqueue, settle, cancel, publish and the repairs
  wait for the disk. Writes a power cut may undo harmlessly (claims and lease extensions:
  the job just runs again; progress, recovery, pruning, token buckets, named leases and
  the worker registry: redone or transient) commit without their own fsync, and become
  durable with the next commit that has one.
* **Stats without scans.** State counts and Little's-Law counters live in ``stats`` and
  change in the same transaction as the jobs they count.
* **Wake-ups.** Brokers on the same file in one process share a notifier; other
  processes are pinged over Unix datagram sockets beside the database; and waiting calls
  poll adaptively (1 ms doubling to 50 ms) with a cheap ``PRAGMA data_version`` check that
  takes no lock. See :mod:`offload.brokers._sqlite_wake`.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from offload.brokers._coalesce import Coalescer
from offload.brokers._sqlite_admin import AdminStore
from offload.brokers._sqlite_db import Database, Queries, SqliteSettings
from offload.brokers._sqlite_store import JobStore
from offload.brokers._sqlite_tally import Tally
from offload.brokers._sqlite_topics import TopicStore
from offload.brokers._sqlite_wake import WakeHub, acquire_hub, release_hub
from offload.brokers.base import BrokerBase, Capabilities
from offload.clock import Clock, system_clock
from offload.errors import BrokerError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from offload.brokers.base import (
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

__all__ = ["SqliteBroker"]

T = TypeVar("T")

#: Adaptive polling while a call waits: the first re-check comes after POLL_MIN_S, then
#: the interval doubles up to POLL_MAX_S, and drops back whenever something changed.
POLL_MIN_S = 0.001
POLL_MAX_S = 0.05
#: After a settle frees a key slot, this broker's next claim waits this long when other
#: processes listen on the file. Its own claim would otherwise always beat theirs (an
#: in-process wake-up is faster than a ping), and one process would run every job of a
#: concurrency-limited task while the others idle.
HANDOFF_S = 0.002


@functools.cache
def _queries() -> Queries:
    return Queries.load()


class SqliteBroker(BrokerBase):
    """Jobs, results, topics and coordination in one SQLite file (WAL).

    Safe for many processes on one machine, each with its own broker on the same file.
    Not for several machines: SQLite's locking needs one host's shared memory.
    """

    def __init__(self, url: str, *, clock: Clock = system_clock) -> None:
        self.url = url
        self.clock = clock
        self.settings = SqliteSettings.from_url(url)
        self.capabilities = Capabilities(
            name="sqlite", durable=True, shared=True, push_wakeups=True
        )
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._db: Database | None = None
        self._jobs: JobStore | None = None
        self._topics: TopicStore | None = None
        self._admin: AdminStore | None = None
        self._hub: WakeHub | None = None
        self._rr = 0
        self._busy = False
        self._handoff_until = 0.0
        self._enqueues: Coalescer[EnqueueRequest, EnqueueOutcome] = Coalescer(self._enqueue_batch)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open (creating if needed) the database and migrate its schema. Idempotent.

        Raises:
            BrokerError: the file cannot be opened or is not a database (the message says
                what to do); SchemaOutOfDate if it is older and ``migrate=false``.
        """
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._db, self._jobs, self._topics, self._admin = await loop.run_in_executor(
                executor, self._connect
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._hub = acquire_hub(self.settings.path)
        self._closing = False
        self._executor = executor

    def _connect(self) -> tuple[Database, JobStore, TopicStore, AdminStore]:
        db = Database.open(self.settings, self.url, self.clock)
        jobs = JobStore(db, _queries())
        return db, jobs, TopicStore(jobs), AdminStore(jobs)

    async def close(self) -> None:
        """Finish queued calls, close the connection and the wake-up socket. Idempotent."""
        executor, db, hub = self._executor, self._db, self._hub
        if executor is None or db is None or self._closing:
            return
        self._closing = True
        try:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        finally:
            executor.shutdown(wait=False)
            if hub is not None:
                release_hub(hub)
            self._executor = None
            self._db = self._jobs = self._topics = self._admin = self._hub = None

    async def pragmas(self) -> dict[str, object]:
        """The SQLite settings in force (journal_mode, synchronous, busy_timeout, ...)."""
        return await self._call(lambda: self._open_db().pragmas())

    # ------------------------------------------------------------------ plumbing

    def _not_open(self) -> BrokerError:
        return BrokerError(
            f"{self!r} is not open: call `await broker.open()` (or use `async with`) first."
        )

    def _open_db(self) -> Database:
        if self._db is None:
            raise self._not_open()
        return self._db

    def _parts(self) -> tuple[JobStore, TopicStore, AdminStore, WakeHub]:
        if self._jobs is None or self._topics is None or self._admin is None or not self._hub:
            raise self._not_open()
        return self._jobs, self._topics, self._admin, self._hub

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on this broker's database thread."""
        executor = self._executor
        if executor is None or self._closing:
            raise self._not_open()
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def _tx(
        self,
        body: Callable[[Tally, float], T],
        wake: bool | Callable[[T], bool] = False,
        *,
        durable: bool = True,
    ) -> T:
        """Run ``body(tally, now)`` as one write transaction; ping waiters if ``wake``.

        ``durable=False`` skips the fsync, for writes a power cut may undo harmlessly
        (see :meth:`Database.write`).
        """
        return await self._call(self._run_tx, body, wake, durable)

    def _run_tx(
        self,
        body: Callable[[Tally, float], T],
        wake: bool | Callable[[T], bool],
        durable: bool = True,
    ) -> T:
        jobs, _, _, hub = self._parts()
        tally = Tally()

        def transaction(now: float) -> T:
            out = body(tally, now)
            tally.flush(jobs.cur, jobs.q.upsert_stats)
            return out

        out = self._open_db().write(transaction, durable=durable)
        if wake is True or (callable(wake) and wake(out)):
            hub.ping()
        return out

    async def _read(self, body: Callable[[float], T]) -> T:
        """Run read-only ``body(now)`` in one consistent snapshot."""
        return await self._call(lambda: self._open_db().snapshot(body))

    async def _wait_for(
        self,
        attempt: Callable[[], Awaitable[tuple[T, int, float | None]]],
        done: Callable[[T], bool],
        deadline: float,
    ) -> T:
        """Repeat ``attempt`` until ``done`` or the loop-time ``deadline``.

        ``attempt`` returns (result, data_version before it, next due instant or None).
        Between attempts, wait for a wake-up (in-process notify or a ping from another
        process) or poll with backoff; a poll re-attempts only if another connection
        committed (``PRAGMA data_version`` moved) or a delayed job fell due, so idle
        waiting never takes the write lock.
        """
        hub = self._parts()[3]
        loop = asyncio.get_running_loop()
        version = hub.notifier.version
        result, seen, due = await attempt()
        if done(result) or loop.time() >= deadline:
            return result
        poll = POLL_MIN_S
        with hub.listening(loop):
            while (remaining := deadline - loop.time()) > 0:
                timeout = min(poll, remaining)
                if due is not None:
                    timeout = min(timeout, max(0.001, due - self.clock.now()))
                woken = await hub.notifier.wait(timeout, version)
                version = hub.notifier.version
                if not (woken or self._is_due(due) or await self._changed_since(seen)):
                    poll = min(poll * 2, POLL_MAX_S)
                    continue
                result, seen, due = await attempt()
                if done(result):
                    return result
                poll = POLL_MIN_S
        return result

    def _is_due(self, due: float | None) -> bool:
        return due is not None and self.clock.now() >= due

    async def _changed_since(self, seen: int) -> bool:
        return await self._call(lambda: self._open_db().data_version()) != seen

    # ------------------------------------------------------------------ queue ops

    async def enqueue(self, requests: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        """Store jobs; each outcome is queued, duplicate or full.

        Concurrent calls share transactions (group commit): every call that arrives while
        one is being written joins the next, so many one-job enqueues share one fsync.
        """
        return await self._enqueues.submit(requests)

    async def _enqueue_batch(self, reqs: list[EnqueueRequest]) -> list[EnqueueOutcome]:
        jobs = self._parts()[0]
        return await self._tx(lambda t, now: jobs.enqueue(t, now, reqs, bounded=True), wake=True)

    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_s: float,
        wait_s: float = 0.0,
    ) -> list[Delivery]:
        """Take up to ``limit`` due jobs in one transaction, waiting up to ``wait_s``."""
        names = list(queues)
        loop = asyncio.get_running_loop()

        async def attempt() -> tuple[list[Delivery], int, float | None]:
            if (pause := self._handoff_until - loop.time()) > 0:
                await asyncio.sleep(pause)  # see HANDOFF_S
            return await self._call(self._try_claim, names, worker_id, limit, lease_s)

        return await self._wait_for(
            attempt, lambda got: bool(got) or limit <= 0, loop.time() + wait_s
        )

    def _try_claim(
        self, queues: list[str], worker_id: str, limit: int, lease_s: float
    ) -> tuple[list[Delivery], int, float | None]:
        db = self._open_db()
        jobs = self._parts()[0]
        seen = db.data_version()
        start = self._rr
        self._rr += 1
        # While claims find work, go straight for the write lock; once one comes back
        # empty, look first with a read that takes no lock, so idle pollers never queue
        # behind (or block) the writers.
        if (
            limit > 0
            and queues
            and (self._busy or db.read(lambda: jobs.has_work(queues, self.clock.now())))
        ):
            got = self._run_tx(
                lambda t, now: jobs.claim(t, now, queues, worker_id, limit, lease_s, start),
                wake=False,
                durable=False,
            )
            self._busy = bool(got)
            if got:
                return got, seen, None
        return [], seen, db.read(jobs.next_due)

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[LeaseState]:
        """Renew leases in one transaction; report lost leases and cancel requests."""
        ds = list(deliveries)
        jobs = self._parts()[0]
        answers = await self._call(
            self._run_tx, lambda _t, now: jobs.extend(now, ds, lease_s), False, False
        )
        for d, (_, expires) in zip(ds, answers, strict=True):
            d.lease_expires = expires
        return [state for state, _ in answers]

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Record outcomes in one transaction; each is fenced by its lease."""
        items = list(settlements)
        jobs, _, _, hub = self._parts()

        def run() -> tuple[list[bool], bool]:  # on the database thread, listing included
            unblocked = jobs.unblocked
            out = self._run_tx(lambda t, now: jobs.settle(t, now, items), any)
            return out, jobs.unblocked != unblocked and hub.has_peers()

        out, hand_off = await self._call(run)
        if hand_off:
            self._handoff_until = asyncio.get_running_loop().time() + HANDOFF_S
        return out

    async def recover_expired(self, limit: int = 1000) -> int:
        """Return expired leases to queued (or dead after ``max_recoveries``)."""
        jobs = self._parts()[0]
        return await self._tx(
            lambda t, now: jobs.recover_expired(t, now, limit), wake=bool, durable=False
        )

    async def prune(self, limit: int = 1000) -> int:
        """Delete final jobs past their TTL, events past retention, expired kv and workers."""
        jobs, topics, admin, _ = self._parts()

        def body(t: Tally, now: float) -> int:
            admin.prune_coordination(now)
            return jobs.prune_jobs(t, now, limit) + topics.trim(now)

        return await self._tx(body, durable=False)

    async def cancel(self, job_ids: Sequence[str]) -> list[JobState | None]:
        """Cancel pending jobs now; flag running ones (seen by ``extend``)."""
        ids = list(job_ids)
        jobs = self._parts()[0]
        return await self._tx(lambda t, now: jobs.cancel(t, now, ids), wake=True)

    async def set_progress(self, delivery: Delivery, value: float, message: str | None) -> bool:
        """Record a running job's progress (fenced by its lease)."""
        jobs = self._parts()[0]
        return await self._tx(
            lambda _t, now: jobs.set_progress(now, delivery, value, message),
            wake=bool,
            durable=False,
        )

    # ------------------------------------------------------------------ results

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Job records in one statement; ``None`` for unknown ids."""
        ids = list(job_ids)
        jobs = self._parts()[0]
        return await self._call(lambda: self._open_db().read(lambda: jobs.get_jobs(ids)))

    async def wait_job(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Wait until the job is final (woken by settles here and pings from elsewhere)."""
        jobs = self._parts()[0]
        loop = asyncio.get_running_loop()

        def read() -> tuple[JobRecord | None, int, float | None]:
            db = self._open_db()
            seen = db.data_version()
            return db.read(lambda: jobs.get_jobs([job_id]))[0], seen, None

        async def attempt() -> tuple[JobRecord | None, int, float | None]:
            return await self._call(read)

        record = await self._wait_for(
            attempt, lambda r: r is None or r.state.is_final, loop.time() + timeout_s
        )
        if record is not None and not record.state.is_final:
            record = (await attempt())[0]
        return record

    # ------------------------------------------------------------------ topics

    async def ensure_topic(self, topic: TopicSpec, groups: Sequence[GroupSpec]) -> None:
        """Create or update a topic and its groups (one transaction)."""
        gs = list(groups)
        topics = self._parts()[1]
        await self._tx(lambda t, now: topics.ensure(t, now, topic, gs), wake=True)

    async def publish(self, topic: str, events: Sequence[EventRequest]) -> list[int]:
        """Append events and their group deliveries in one transaction; return offsets."""
        evs = list(events)
        topics = self._parts()[1]
        return await self._tx(lambda t, now: topics.publish(t, now, topic, evs), wake=True)

    async def replay(
        self,
        topic: str,
        group: str,
        from_offset: int | None = None,
        from_time: float | None = None,
    ) -> int:
        """Deliver retained events to ``group`` again, from an offset or a time."""
        topics = self._parts()[1]
        return await self._tx(
            lambda t, now: topics.replay(t, now, topic, group, from_offset, from_time), wake=bool
        )

    async def topics(self) -> list[TopicInfo]:
        """Every topic with its retained range and groups."""
        topics = self._parts()[1]
        return await self._read(lambda _now: topics.topics())

    # ------------------------------------------------------------------ coordination

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew a named lease; False while another owner holds it."""
        admin = self._parts()[2]
        return await self._tx(
            lambda _t, now: admin.acquire_lease(now, name, owner, ttl_s), durable=False
        )

    async def release_lease(self, name: str, owner: str) -> bool:
        """Give a named lease up, if ``owner`` holds it."""
        admin = self._parts()[2]
        return await self._tx(lambda _t, _now: admin.release_lease(name, owner), durable=False)

    async def take_tokens(self, bucket: str, rate: float, burst: float, n: float = 1.0) -> float:
        """Token bucket: 0.0 if taken, else the seconds until ``n`` tokens are there."""
        admin = self._parts()[2]
        return await self._tx(
            lambda _t, now: admin.take_tokens(now, bucket, rate, burst, n), durable=False
        )

    async def kv_get(self, key: str) -> bytes | None:
        """A stored, unexpired value, or None."""
        admin = self._parts()[2]
        return await self._read(lambda now: admin.kv_get(now, key))

    async def kv_set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store a value (expiring after ``ttl_s``)."""
        admin = self._parts()[2]
        await self._tx(lambda _t, now: admin.kv_set(now, key, value, ttl_s))

    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        """Record a worker as alive for ``ttl_s`` seconds."""
        admin = self._parts()[2]
        await self._tx(lambda _t, now: admin.register_worker(now, info, ttl_s), durable=False)

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        admin = self._parts()[2]
        await self._tx(lambda _t, _now: admin.unregister_worker(worker_id), durable=False)

    async def workers(self) -> list[WorkerInfo]:
        """Workers seen within their TTL."""
        admin = self._parts()[2]
        return await self._read(admin.workers)

    # ------------------------------------------------------------------ inspection

    async def queues(self) -> list[str]:
        """Every queue that holds or held jobs."""
        admin = self._parts()[2]
        return await self._read(lambda _now: admin.queues())

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts and counters per queue, from the stats table (one snapshot)."""
        names = None if queues is None else list(queues)
        admin = self._parts()[2]
        return await self._read(lambda now: admin.stats(now, names))

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs matching the filters, newest first, one page per call."""
        admin = self._parts()[2]
        return await self._read(lambda _now: admin.list_jobs(queue, state, name, limit, cursor))

    async def timings(self, queue: str, since: float, limit: int = 1000) -> list[Timing]:
        """Finished jobs of a queue since ``since``, newest first."""
        admin = self._parts()[2]
        return await self._read(lambda _now: admin.timings(queue, since, limit))

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Move dead or cancelled jobs back to queued with fresh attempts."""
        ids = list(job_ids)
        jobs = self._parts()[0]
        return await self._tx(lambda t, now: jobs.requeue(t, now, ids), wake=bool)

    async def delete(self, job_ids: Sequence[str]) -> int:
        """Delete jobs that are not running."""
        ids = list(job_ids)
        jobs = self._parts()[0]
        return await self._tx(lambda t, now: jobs.delete(t, now, ids), wake=bool)

    async def purge(self, queue: str, states: Sequence[JobState] | None = None) -> int:
        """Delete a queue's jobs in ``states`` (default: every pending state)."""
        wanted = None if states is None else list(states)
        admin = self._parts()[2]
        return await self._tx(lambda t, now: admin.purge(t, now, queue, wanted), wake=bool)
