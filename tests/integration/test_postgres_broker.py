"""What the conformance suite cannot say about the PostgreSQL broker: schema versions and
migrations, transactional enqueue (the outbox pattern), wake-ups, errors and URLs, counts
under concurrency, pruning in batches, and a private server killed and restarted.

Tests use the shared server under a private schema each (``offload_t_*``, dropped after),
except the crash test, which runs a PostgreSQL cluster of its own on a free port.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from offload.brokers import open_broker
from offload.brokers._pg_sql import LATEST_VERSION, MIGRATIONS, render
from offload.brokers.base import (
    Ack,
    EnqueueRequest,
    EventRequest,
    GroupSpec,
    JobState,
    Release,
    TopicSpec,
    group_queue,
)
from offload.brokers.postgres import PostgresBroker
from offload.clock import FakeClock
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError, SchemaOutOfDate
from tests.backends import postgres_check, postgres_cleanup, postgres_url, unavailable
from tests.integration.pgcluster import PrivateCluster, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """A broker URL with a schema of its own on the shared server, dropped afterwards."""
    reason = await postgres_check()
    if reason:
        unavailable(reason)
    made = postgres_url(uuid.uuid4().hex[:10])
    try:
        yield made
    finally:
        await postgres_cleanup(made)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def broker(url: str, clock: FakeClock) -> AsyncIterator[PostgresBroker]:
    b = PostgresBroker(url, clock=clock)
    await b.open()
    try:
        yield b
    finally:
        await b.close()


def conninfo(url: str) -> str:
    return PostgresBroker(url).settings.conninfo


def schema_of(url: str) -> str:
    return PostgresBroker(url).schema


_n = iter(range(10**9))


def req(clock: FakeClock, **fields: Any) -> EnqueueRequest:
    fields.setdefault("id", f"job-{next(_n):07d}")
    fields.setdefault("queue", "q")
    fields.setdefault("name", "task")
    fields.setdefault("payload", b"payload")
    fields.setdefault("enqueued_at", clock.now())
    return EnqueueRequest(**fields)


# ----------------------------------------------------------------- schema and migrations


CATALOG = """
SELECT 'column', c.table_name || '.' || c.column_name,
       concat_ws(' ', c.data_type, c.collation_name, c.is_nullable, c.column_default)
  FROM information_schema.columns c WHERE c.table_schema = %(s)s
UNION ALL
SELECT 'index', i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = %(s)s
UNION ALL
SELECT 'constraint', t.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %(s)s
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(pg_get_functiondef(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s
UNION ALL
SELECT 'trigger', g.tgname, pg_get_triggerdef(g.oid)
  FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = %(s)s AND NOT g.tgisinternal
UNION ALL
SELECT 'sequence', s.sequence_name, concat_ws(' ', s.data_type, s.start_value, s.minimum_value)
  FROM information_schema.sequences s WHERE s.sequence_schema = %(s)s
"""


async def catalog(url: str) -> set[tuple[str, str, str]]:
    """Every table column, index, constraint, function, trigger and sequence of the
    schema, with the schema's own name taken out so two schemas can be compared."""
    schema = schema_of(url)
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        rows = await (await conn.execute(CATALOG, {"s": schema})).fetchall()
        out = set()
        for kind, name, definition in rows:
            if kind == "function":  # the body names the schema; compare it renamed
                fn = await conn.execute(
                    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s",
                    [schema, name.partition("(")[0]],
                )
                definition = "".join(r[0] for r in await fn.fetchall())
            out.add((kind, name, str(definition).replace(schema, "<schema>")))
    return out


async def install_version_1(url: str) -> None:
    """What an offload that only knew migration 0001 left behind."""
    schema = schema_of(url)
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        await conn.execute(render("CREATE SCHEMA {schema}", schema).encode())
        await conn.execute(render(MIGRATIONS[0].text, schema).encode())
        await conn.execute(
            render(
                "INSERT INTO {schema}.schema_version (version, name, applied_at) VALUES (1, %s, 0)",
                schema,
            ).encode(),
            [MIGRATIONS[0].name],
        )


async def test_open_installs_a_missing_schema_at_the_latest_version(url: str) -> None:
    async with PostgresBroker(url) as b:
        assert await b.migrate() == [], "a fresh install is already up to date"
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        cur = await conn.execute(
            render("SELECT max(version) FROM {schema}.schema_version", schema_of(url)).encode()
        )
        assert (await cur.fetchone()) == (LATEST_VERSION,)


async def test_processes_opening_a_fresh_schema_at_once_all_succeed(url: str) -> None:
    brokers = [PostgresBroker(url) for _ in range(4)]
    await asyncio.gather(*(b.open() for b in brokers))
    await asyncio.gather(*(b.close() for b in brokers))


async def test_a_schema_behind_refuses_to_open_until_migrated(url: str) -> None:
    assert LATEST_VERSION >= 2, "the test needs a migration after the first"
    await install_version_1(url)
    b = PostgresBroker(url)
    with pytest.raises(SchemaOutOfDate, match="run `offload db migrate`") as info:
        await b.open()
    assert "version 1" in str(info.value) and f"version {LATEST_VERSION}" in str(info.value)
    assert await b.migrate() == list(range(2, LATEST_VERSION + 1))
    await b.open()
    await b.close()


async def test_migrating_from_version_1_equals_a_fresh_install(url: str) -> None:
    await install_version_1(url)
    await PostgresBroker(url).migrate()
    migrated = await catalog(url)
    fresh_url = postgres_url(uuid.uuid4().hex[:10])
    try:
        async with PostgresBroker(fresh_url):
            pass
        fresh = await catalog(fresh_url)
    finally:
        await postgres_cleanup(fresh_url)
    assert migrated == fresh
    assert {kind for kind, _, _ in fresh} >= {"column", "index", "function", "trigger"}


async def test_a_schema_ahead_of_this_offload_is_refused(url: str) -> None:
    async with PostgresBroker(url):
        pass
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        await conn.execute(
            render(
                "INSERT INTO {schema}.schema_version (version, name, applied_at) "
                "VALUES (%s, 'future', 0)",
                schema_of(url),
            ).encode(),
            [LATEST_VERSION + 1],
        )
    with pytest.raises(BrokerError, match="upgrade offload"):
        await PostgresBroker(url).open()


async def test_changed_functions_are_noticed_and_reinstalled_by_migrate(url: str) -> None:
    async with PostgresBroker(url):
        pass
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        await conn.execute(
            render(
                "UPDATE {schema}.schema_version SET functions_sha = 'old'", schema_of(url)
            ).encode()
        )
    with pytest.raises(SchemaOutOfDate, match="functions"):
        await PostgresBroker(url).open()
    assert await PostgresBroker(url).migrate() == []
    async with PostgresBroker(url):
        pass


async def test_a_dropped_schema_says_how_to_repair_it(
    broker: PostgresBroker, clock: FakeClock
) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo(broker.url), autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA "{broker.schema}" CASCADE'.encode())
    with pytest.raises(SchemaOutOfDate, match="offload db migrate") as info:
        await broker.enqueue([req(clock)])
    assert isinstance(info.value.__cause__, psycopg.Error)


# ----------------------------------------------------------------- transactional enqueue


async def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        [out] = await broker.enqueue([req(clock, id="outbox-1")], connection=conn)
        assert out.status == "queued"
        await conn.rollback()
    assert await broker.get_job("outbox-1") is None
    assert await broker.claim(["q"], "w", 10, 30) == []
    [stats] = await broker.stats(["q"])
    assert stats.counts.queued == 0 and stats.counters.enqueued == 0


async def test_enqueue_in_a_transaction_is_invisible_until_commit(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    producer = PostgresBroker(url, clock=clock)  # never opened: it needs no pool
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        await conn.execute("SELECT 1")  # the caller's own work in the same transaction
        await producer.enqueue([req(clock, id="outbox-2")], connection=conn)
        assert conn.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS
        # A concurrent claimer (another connection) never sees the uncommitted job.
        assert await broker.claim(["q"], "w", 10, 30) == []
        assert await broker.get_job("outbox-2") is None
        await conn.commit()
    [d] = await broker.claim(["q"], "w", 10, 30)
    assert d.job_id == "outbox-2"


async def test_commit_wakes_a_waiting_claimer(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    waiter = asyncio.create_task(broker.claim(["q"], "w", 10, 30, wait_s=20))
    await asyncio.sleep(0.3)
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        await broker.enqueue([req(clock)], connection=conn)
        await asyncio.sleep(0.3)
        assert not waiter.done(), "nothing to claim before the commit"
        await conn.commit()
        committed = time.monotonic()
    got = await asyncio.wait_for(waiter, 10)
    assert len(got) == 1
    assert time.monotonic() - committed < 2.0, "woken by NOTIFY, not by a 5 s poll"


async def test_sync_connection_enqueue_commits_and_rolls_back_with_it(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    def in_transaction(job_id: str, commit: bool) -> None:
        with psycopg.connect(conninfo(url)) as conn:
            [out] = broker.enqueue_sync_in(conn, [req(clock, id=job_id)])
            assert out.status == "queued"
            conn.commit() if commit else conn.rollback()

    await asyncio.to_thread(in_transaction, "sync-rolled-back", False)
    await asyncio.to_thread(in_transaction, "sync-committed", True)
    assert await broker.get_job("sync-rolled-back") is None
    [d] = await broker.claim(["q"], "w", 10, 30)
    assert d.job_id == "sync-committed"


async def test_publish_in_the_callers_transaction(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    await broker.ensure_topic(TopicSpec(name="orders"), [GroupSpec(topic="orders", group="g")])
    q = group_queue("orders", "g")

    def event(i: int) -> EventRequest:
        return EventRequest(id=f"ev-{i}", payload=b"e", published_at=clock.now())

    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        await broker.publish("orders", [event(1)], connection=conn)
        await conn.rollback()
        await broker.publish("orders", [event(2)], connection=conn)
        assert await broker.claim([q], "w", 10, 30) == []
        await conn.commit()
    [d] = await broker.claim([q], "w", 10, 30)
    assert d.job_id == "ev-2:g"
    [info] = await broker.topics()
    assert info.retained == 1, "the rolled-back event is not in the log either"

    def sync_publish() -> None:
        with psycopg.connect(conninfo(url)) as conn:
            broker.publish_sync_in(conn, "orders", [event(3)])

    await asyncio.to_thread(sync_publish)
    [d] = await broker.claim([q], "w", 10, 30)
    assert d.job_id == "ev-3:g"


# ----------------------------------------------------------------- wake-ups


async def notifications(url: str, work: Any) -> list[str]:
    """Payloads NOTIFYed on the broker's channel while ``work()`` runs."""
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        await conn.execute(f'LISTEN "{schema_of(url)}"'.encode())
        await work()
        return [n.payload async for n in conn.notifies(timeout=0.5)]


async def test_notify_is_coalesced_per_transaction_and_queue(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    async def enqueue() -> None:
        reqs = [req(clock, queue=q) for q in ("a", "b") for _ in range(50)]
        reqs += [req(clock, queue="c", eta=clock.now() + 60)]  # not claimable yet: no hint
        await broker.enqueue(reqs)

    assert sorted(await notifications(url, enqueue)) == ["q:a", "q:b"]


async def test_results_notify_only_while_someone_waits(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    await broker.enqueue([req(clock) for _ in range(4)])
    ds = await broker.claim(["q"], "w", 4, 30)

    async def settle_two() -> None:
        await broker.settle([Ack(ds.pop()), Ack(ds.pop())])

    assert await notifications(url, settle_two) == [], "nobody awaits results: no NOTIFY"
    waiter = asyncio.create_task(broker.wait_job(ds[0].job_id, timeout_s=10))
    await asyncio.sleep(0.3)
    assert await notifications(url, settle_two) == ["d:q"]
    record = await asyncio.wait_for(waiter, 5)
    assert record is not None and record.state is JobState.SUCCEEDED


async def test_many_result_waiters_share_their_reads(
    broker: PostgresBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outs = await broker.enqueue([req(clock) for _ in range(50)])
    reads: list[int] = []
    get_jobs = broker.get_jobs

    async def counting(ids: Any) -> Any:
        reads.append(len(ids))
        return await get_jobs(ids)

    monkeypatch.setattr(broker, "get_jobs", counting)
    broker._rereads = type(broker._rereads)(counting)
    waiters = [asyncio.create_task(broker.wait_job(o.job_id, 20)) for o in outs]
    await asyncio.sleep(0.5)
    reads.clear()
    await broker.settle([Ack(d) for d in await broker.claim(["q"], "w", 50, 30)])
    records = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert all(r is not None and r.state is JobState.SUCCEEDED for r in records)
    # Alone, each waiter would read at least once (50 reads); batched, the notification
    # costs one read, plus a few for waiters whose poll timers fired meanwhile.
    assert len(reads) < 10 and max(reads) > 1, f"reads were not shared: {reads}"


async def test_idle_claims_survive_a_lost_listening_connection(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    assert await broker.claim(["q"], "w", 10, 30, wait_s=0.1) == []  # starts the listener
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query = %s AND pid <> pg_backend_pid()",
            [f'LISTEN "{broker.schema}"'],
        )
    waiter = asyncio.create_task(broker.claim(["q"], "w", 10, 30, wait_s=20))
    await asyncio.sleep(0.5)
    await broker.enqueue([req(clock)])
    got = await asyncio.wait_for(waiter, 10)
    assert len(got) == 1


# ----------------------------------------------------------------- errors and URLs


async def test_a_closed_port_fails_fast_with_a_clear_redacted_message() -> None:
    port = free_port()  # free: nobody listens there
    b = open_broker(f"postgresql://offload:s3cret@127.0.0.1:{port}/db?schema=x")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        await b.open()
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "s3cret" not in message and "offload:***@127.0.0.1" in message
    assert "running and reachable" in message
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("schema=no-dashes", "Invalid schema"),
        ("schema=x&pool_max_size=many", "pool_max_size"),
        ("schema=x&pool_timeout=0", "pool_timeout"),
    ],
)
def test_bad_offload_options_are_refused_at_once(query: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        PostgresBroker(f"postgresql://u@127.0.0.1/db?{query}")


async def test_unknown_url_parameters_are_refused_with_a_hint(url: str) -> None:
    with pytest.raises(ConfigurationError, match="offload's own parameters"):
        await PostgresBroker(f"{url}&no_such_option=1").open()


async def test_a_wrong_database_is_an_error_not_a_retry(url: str) -> None:
    wrong = url.replace("/test?", "/no_such_db_offload?", 1)
    assert wrong != url
    with pytest.raises(BrokerError, match="does not exist") as info:
        await PostgresBroker(wrong).open()
    assert not isinstance(info.value, BrokerUnavailable)


async def test_own_parameters_are_stripped_and_the_rest_passed_on(url: str) -> None:
    b = PostgresBroker(f"{url}&pool_min_size=2&pool_max_size=3&application_name=offload-t")
    assert "pool_" not in b.settings.conninfo and "schema=" not in b.settings.conninfo
    async with b:
        assert b._pool is not None and (b._pool.min_size, b._pool.max_size) == (2, 3)
        async with b._pool.connection() as conn:
            cur = await conn.execute("SHOW application_name")
            assert await cur.fetchone() == ("offload-t",)
    assert repr(b).startswith("<PostgresBroker postgresql://postgres@")


async def test_operations_before_open_say_what_to_do(url: str) -> None:
    with pytest.raises(BrokerError, match=r"await broker\.open\(\)"):
        await PostgresBroker(url).claim(["q"], "w", 1, 30)


# ----------------------------------------------------------------- counts and pruning


async def test_counts_match_the_rows_under_concurrent_work(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    """Triggers roll every statement into per-backend shard rows; whatever interleaving
    the pool produces, the sums must equal a recount of the jobs."""
    rng = random.Random(7)
    names = ["a", "b", "c"]

    async def producer() -> None:
        for _ in range(10):
            batch = [
                req(clock, name=rng.choice(names), key=rng.choice([None, None, "k1", "k2"]))
                for _ in range(rng.randint(1, 20))
            ]
            await broker.enqueue(batch)

    async def consumer(i: int) -> None:
        for _ in range(15):
            got = await broker.claim(["q"], f"w{i}", rng.randint(1, 8), 30)
            settles: list[Any] = []
            for d in got:
                choice = rng.random()
                settles.append(Ack(d) if choice < 0.7 else Release(d))
            await broker.settle(settles)
            if rng.random() < 0.3:
                await broker.cancel([d.job_id for d in got[:1]])

    await asyncio.gather(*(producer() for _ in range(4)), *(consumer(i) for i in range(4)))
    [stats] = await broker.stats(["q"])
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        cur = await conn.execute(
            render(
                "SELECT state, count(*) FROM {schema}.jobs GROUP BY state", broker.schema
            ).encode()
        )
        actual = dict(await cur.fetchall())
    for state in JobState:
        assert getattr(stats.counts, state.value) == actual.get(state.value, 0), state
    total = sum(actual.values())
    assert stats.counters.enqueued == total
    assert stats.counters.in_system == total - stats.counts.succeeded - stats.counts.cancelled


async def test_a_duplicate_in_a_keyed_batch_gives_its_slot_to_the_next_job(
    broker: PostgresBroker, clock: FakeClock
) -> None:
    await broker.enqueue([req(clock, id="taken")])
    outs = await broker.enqueue(
        [
            req(clock, id="taken", key="K"),  # planned to hold K's slot, but a duplicate
            req(clock, id="next", key="K"),  # planned to wait behind it
            req(clock, id="d1", key="L", dedupe_key="D"),
            req(clock, id="d2", key="L", dedupe_key="D"),  # a duplicate inside the batch
            req(clock, id="after", key="L"),
        ]
    )
    assert [(o.status, o.job_id) for o in outs] == [
        ("duplicate", "taken"),
        ("queued", "next"),
        ("queued", "d1"),
        ("duplicate", "d1"),
        ("queued", "after"),
    ]
    states = {r.id: r.state for r in await broker.get_jobs(["next", "d1", "after"]) if r}
    assert states == {"next": JobState.QUEUED, "d1": JobState.QUEUED, "after": JobState.BLOCKED}
    [stats] = await broker.stats(["q"])
    assert (stats.counts.queued, stats.counts.blocked) == (3, 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_keyed_batches_behave_like_the_reference_broker(url: str, seed: int) -> None:
    """Batches mixing keys, key limits, dedupe keys and repeated or existing ids take the
    set-based path; each step must match the memory broker's outcome exactly."""
    from offload.brokers.memory import MemoryBroker

    rng = random.Random(seed)
    mem_clock, pg_clock = FakeClock(), FakeClock()
    mem = MemoryBroker(clock=mem_clock)
    pg = PostgresBroker(url, clock=pg_clock)
    await pg.open()
    try:
        ids: list[str] = []
        for step in range(25):
            batch = []
            for _ in range(rng.randint(1, 12)):
                job_id = rng.choice(ids) if ids and rng.random() < 0.1 else f"j{len(ids)}"
                ids.append(job_id)
                batch.append(
                    {
                        "id": job_id,
                        "key": rng.choice([None, "k1", "k2", "k3"]),
                        "key_limit": rng.choice([1, 1, 2]),
                        "dedupe_key": rng.choice([None, None, None, "d1", "d2"]),
                        "priority": rng.choice([0, 0, 5]),
                        "eta": rng.choice([None, None, 1_800_000_005.0]),
                    }
                )
            outs = [
                await b.enqueue([req(c, **f) for f in batch])
                for b, c in ((mem, mem_clock), (pg, pg_clock))
            ]
            assert outs[0] == outs[1], f"step {step}: enqueue outcomes differ"
            limit = rng.randint(0, 6)
            got = [await b.claim(["q"], "w", limit, 30) for b in (mem, pg)]
            assert [d.job_id for d in got[0]] == [d.job_id for d in got[1]], f"step {step}"
            for b, ds in zip((mem, pg), got, strict=True):
                assert all(await b.settle([Ack(d) for d in ds[: len(ds) // 2 + 1]]))
            for c in (mem_clock, pg_clock):
                c.advance(1)
        known = sorted(set(ids))
        states = [[r.state if r else None for r in await b.get_jobs(known)] for b in (mem, pg)]
        assert states[0] == states[1]
        [ms], [ps] = await mem.stats(["q"]), await pg.stats(["q"])
        assert ms.counts == ps.counts
    finally:
        await pg.close()


async def test_prune_works_in_batches(broker: PostgresBroker, clock: FakeClock) -> None:
    await broker.enqueue([req(clock, result_ttl_s=10) for _ in range(25)])
    for d in await broker.claim(["q"], "w", 100, 30):
        assert await broker.ack(d)
    await broker.ensure_topic(
        TopicSpec(name="t", retention_s=10), [GroupSpec(topic="t", group="g")]
    )
    await broker.publish(
        "t", [EventRequest(id=f"e{i}", payload=b"", published_at=clock.now()) for i in range(5)]
    )
    clock.advance(11)
    # Each call: up to 10 jobs, then up to 10 events.
    assert [await broker.prune(limit=10) for _ in range(4)] == [15, 10, 5, 0]
    [info] = await broker.topics()
    assert info.retained == 0
    [stats] = await broker.stats(["q"])
    assert stats.counts.succeeded == 0 and stats.counters.succeeded == 25


async def test_prune_vacuums_where_autovacuum_will_not(
    url: str, broker: PostgresBroker, clock: FakeClock
) -> None:
    schema = broker.schema
    stat = render(
        "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables "
        "WHERE schemaname = {schema_name} AND relname = 'jobs'",
        schema,
    ).encode()
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as conn:
        # Whatever the server's setting, autovacuum will not touch this table.
        await conn.execute(
            render("ALTER TABLE {schema}.jobs SET (autovacuum_enabled = false)", schema).encode()
        )
        await broker.enqueue([req(clock) for _ in range(6_000)])
        for _ in range(2):  # claim all, release all: two dead row versions per job
            held = []
            while len(held) < 6_000:
                held += await broker.claim(["q"], "w", 1000, 30)
            await broker.settle([Release(d) for d in held])
        deadline = time.monotonic() + 10
        while (row := await (await conn.execute(stat)).fetchone()) and row[0] < 20_000:
            assert time.monotonic() < deadline, f"dead rows not reported: {row}"
            await asyncio.sleep(0.2)  # the statistics lag behind by about a second
        assert row is not None and row[1] == 0
        await broker.prune()
        row = await (await conn.execute(stat)).fetchone()
        assert row is not None and row[1] == 1, "prune ran VACUUM"
        await broker.prune()  # rate-limited: no second VACUUM at once
        assert (await (await conn.execute(stat)).fetchone()) == (row[0], 1)


async def test_keyed_settles_from_many_workers_do_not_deadlock(
    broker: PostgresBroker, clock: FakeClock
) -> None:
    keys = [f"k{i}" for i in range(6)]
    await broker.enqueue([req(clock, key=random.choice(keys)) for _ in range(300)])

    async def worker(i: int) -> int:
        done = 0
        for _ in range(300):
            got = await broker.claim(["q"], f"w{i}", 3, 30)
            random.shuffle(got)  # settle keys in any order: locks are taken sorted anyway
            assert all(await broker.settle([Ack(d) for d in got]))
            done += len(got)
            [stats] = await broker.stats(["q"])
            if stats.counts.pending + stats.counts.running == 0:
                break
            if not got:
                await asyncio.sleep(0.01)
        return done

    assert sum(await asyncio.gather(*(worker(i) for i in range(6)))) == 300


# ----------------------------------------------------------------- a private server


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if not PrivateCluster.possible():
        unavailable("a private PostgreSQL cluster needs root, runuser and PostgreSQL 15 binaries")
    c = PrivateCluster()
    try:
        c.init()
        c.start()
        yield c
    finally:
        c.remove()


async def until_it_works(work: Any, within_s: float) -> Any:
    """Retry ``work()`` through BrokerUnavailable, as a worker does, up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await work()
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_killed_server_comes_back_with_every_committed_job(
    cluster: PrivateCluster, clock: FakeClock
) -> None:
    b = PostgresBroker(f"{cluster.url}?pool_timeout=2", clock=clock)
    await b.open()
    acknowledged: list[str] = []
    stop = asyncio.Event()
    errors: list[BaseException] = []

    async def producer() -> None:
        n = 0
        while not stop.is_set():
            batch = [req(clock, id=f"crash-{n + i}") for i in range(5)]
            n += 5
            try:
                outs = await b.enqueue(batch)
            except BrokerUnavailable as exc:
                errors.append(exc)
                await asyncio.sleep(0.05)
                continue
            acknowledged.extend(o.job_id for o in outs if o.status == "queued")

    try:
        task = asyncio.create_task(producer())
        while len(acknowledged) < 100:
            await asyncio.sleep(0.01)
        claimed = await b.claim(["q"], "w", 20, 10)
        await asyncio.to_thread(cluster.kill)  # mid-use: the producer is writing
        await asyncio.sleep(0.5)
        with pytest.raises(BrokerUnavailable) as info:
            await b.claim(["q"], "w", 10, 10)
        assert isinstance(info.value.__cause__, psycopg.Error | Exception)
        assert "running and reachable" in str(info.value)
        await asyncio.to_thread(cluster.start)
        got = await until_it_works(lambda: b.claim(["q"], "w", 10, 10), within_s=30)
        assert got, "the broker serves again after the restart"
        await asyncio.sleep(0.3)  # the producer resumes too
        stop.set()
        await task
        assert errors, "the outage was seen as BrokerUnavailable"
        assert all(isinstance(e.__cause__, Exception) for e in errors)

        # Every acknowledged enqueue survived; the claims cut off by the crash come back
        # after their lease, like any crashed worker's.
        records = await b.get_jobs(acknowledged)
        missing = [i for i, r in zip(acknowledged, records, strict=True) if r is None]
        assert missing == []
        assert all(
            r is not None and r.state is JobState.RUNNING
            for r in await b.get_jobs([d.job_id for d in claimed])
        )
        clock.advance(11)
        assert await b.recover_expired() >= len(claimed)
    finally:
        stop.set()
        await b.close()
