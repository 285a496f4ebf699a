"""G10: hostile input never crashes or hangs a worker.

Malformed jobs are written straight into each backend's own storage, past offload's
enqueue and its checks: the ``payload`` column of the SQLite ``jobs`` row, the ``p`` field
of the Redis job hash, the ``payload`` bytea of the PostgreSQL row (and a job added by a
foreign producer through the documented ``enqueue_one`` SQL function). A real ``offload
worker`` process serves the queue meanwhile. Every malformed job must reach the dead
letters with its reason within 2 s of falling due, valid jobs before and after it
complete, and the worker's pid never changes.

The producer side (what offload refuses before writing anything) and the connection
errors are tested here only where the rest of the suite does not already; see
``docs/semantics.md`` (G10) for which test proves which point.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from offload import App, SerializationError
from offload.brokers import open_broker
from offload.brokers._pg_conn import parse_url
from offload.brokers._sqlite_db import SqliteSettings
from offload.brokers.base import Broker, EnqueueRequest, ErrorRecord
from offload.message import Envelope, encode_envelope, get_codec
from tests.acceptance.harness import run_cli
from tests.faults.harness import LONG
from tests.faults.harness.checker import Ledger
from tests.faults.harness.probe import QUEUE
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

    from offload.brokers.base import JobRecord
    from tests.faults.harness.fixtures import FaultBackend

DUE_IN_S = 2.0  # malformed jobs are written while they wait, then fall due together
WITHIN_S = 2.0  # G10: in the dead letters this soon after falling due


def _envelope(name: str = "faults.probe", **fields: Any) -> bytes:
    env = Envelope(id="x", name=name, queue=QUEUE, **fields)
    return encode_envelope(env, get_codec("json"), None)


DEEP = b'{"id": "x", "name": "faults.probe", "args": ' + b"[" * 100_000
TRUNCATED = msgspec.msgpack.encode({"id": "x", "name": "faults.probe"})[:-3]
HUGE = _envelope(args=[0], kwargs={"mode": "x" * (2 << 20)})  # over the 1 MiB default

#: (what, the payload written in place of a valid one, the dead-letter reason expected)
GARBAGE: list[tuple[str, bytes, str]] = [
    ("binary", b"\x00\x01\x02\xff garbage", "decode_error"),
    ("broken json", b'{"id": "x", "name": ', "decode_error"),
    ("empty", b"", "decode_error"),
    ("truncated msgpack", TRUNCATED, "decode_error"),
    ("json, not an envelope", b'["id", "name"]', "decode_error"),
    ("future version", b'{"v": 9, "id": "x", "name": "faults.probe"}', "decode_error"),
    ("nested 100k deep", DEEP, "decode_error"),
    ("unknown task", _envelope("no.such.task"), "unknown_task"),
    ("NUL in the task name", _envelope("evil\x00name"), "unknown_task"),
    ("wrong argument type", _envelope(args=["not a number"]), "bad_arguments"),
    ("unknown keyword", _envelope(kwargs={"nope": 1}), "bad_arguments"),
    ("a value the task refuses", _envelope(kwargs={"mode": "\x00"}), "exception"),
    ("2 MiB", HUGE, "payload_too_large"),
]


# --------------------------------------------------------------------------- writers


def _write_sqlite(url: str, job_id: str, payload: bytes) -> None:
    with sqlite3.connect(SqliteSettings.from_url(url).path, timeout=30) as con:
        assert con.execute("UPDATE jobs SET payload = ? WHERE id = ?", (payload, job_id)).rowcount


def _write_redis(url: str, job_id: str, payload: bytes) -> None:
    import redis

    client = redis.Redis.from_url(url.partition("?")[0])
    try:
        [key] = list(client.scan_iter(match=f"*:j:{job_id}"))
        assert client.hset(key, "p", payload) == 0  # replaced, not added
    finally:
        client.close()


def _write_postgres(url: str, job_id: str, payload: bytes) -> None:
    import psycopg

    settings = parse_url(url)
    sql = f'UPDATE "{settings.schema}".jobs SET payload = %s WHERE id = %s'
    with psycopg.connect(settings.conninfo, autocommit=True) as con:
        assert con.execute(sql.encode(), (payload, job_id)).rowcount == 1


WRITERS = {"sqlite": _write_sqlite, "redis": _write_redis, "postgres": _write_postgres}


def _foreign_enqueue_postgres(url: str, job_id: str, payload: bytes, due: float) -> None:
    """A producer in another language, through the documented SQL function."""
    import psycopg

    settings = parse_url(url)
    sql = (
        f'SELECT status FROM "{settings.schema}".enqueue_one('
        "p_id => %s, p_queue => %s, p_name => 'faults.probe', p_kind => 'job', "
        "p_payload => %s, p_enqueued_at => %s, p_priority => 0, p_eta => %s, p_key => NULL, "
        "p_key_limit => 1, p_dedupe_key => NULL, p_max_attempts => 1, "
        "p_max_recoveries => 3, p_max_depth => NULL, p_result_ttl => 86400, "
        "p_dead_ttl => 604800, p_now => %s)"
    )
    now = due - DUE_IN_S
    with psycopg.connect(settings.conninfo, autocommit=True) as con:
        row = con.execute(sql.encode(), (job_id, QUEUE, payload, now, due, now)).fetchone()
        assert row == ("queued",)


def _records(url: str, ids: list[str]) -> list[JobRecord]:
    async def get() -> list[JobRecord]:
        broker = open_broker(url)
        await broker.open()
        try:
            recs = await broker.get_jobs(ids)
        finally:
            await broker.close()
        assert all(r is not None for r in recs)
        return [r for r in recs if r is not None]

    return asyncio.run(get())


# --------------------------------------------------------------------------- the test


@pytest.mark.slow
@pytest.mark.timeout(600 if LONG else 90)
def test_garbage_in_the_store_goes_to_the_dlq_and_the_worker_lives(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    url, name = fault_backend.url, fault_backend.name
    with FaultRun(url, tmp_path, lease_s=5.0, concurrency=4) as run:
        worker = run.start_worker()
        run.wait_ready(worker)
        before = run.enqueue(20, seconds=0.01)
        victims = run.enqueue(len(GARBAGE), options={"delay": DUE_IN_S})
        for job_id, (_, payload, _) in zip(victims, GARBAGE, strict=True):
            WRITERS[name](url, job_id, payload)
        foreign = []
        if name == "postgres":
            foreign = [f"foreign-{i}" for i in range(2)]
            due = _records(url, victims[:1])[0].run_at
            _foreign_enqueue_postgres(url, foreign[0], b"\x00garbage from afar", due)
            _foreign_enqueue_postgres(url, foreign[1], _envelope(args=[[1]]), due)
        after = run.enqueue(20, seconds=0.01)
        assert run.wait_final([*before, *victims, *foreign, *after], timeout=30)
        assert worker.alive() and len(run.workers) == 1, worker.output()[-3000:]
        run.stop_workers()
        ledger = Ledger.read(run.ledger_dir)
        dead = _records(url, [*victims, *foreign])
        good = _records(url, [*before, *after])

    expected = [reason for _, _, reason in GARBAGE] + ["decode_error", "bad_arguments"][
        : len(foreign)
    ]
    got = [(r.state.value, r.errors[-1].reason if r.errors else None) for r in dead]
    shown = ", ".join(f"{w}: {g}" for (w, _, _), g in zip(GARBAGE, got, strict=False))
    print(f"\n[bad input, {name}] {shown}")
    assert got == [("dead", reason) for reason in expected]
    for rec in dead:
        assert rec.errors[-1].message, "a dead letter says why"
        assert rec.finished_at is not None and rec.finished_at - rec.run_at <= WITHIN_S, (
            f"{rec.id} took {rec.finished_at - rec.run_at:.2f}s to reach the dead letters"
        )
    assert all(r.state == "succeeded" for r in good)
    pids = {run_.pid for job in [*before, *after] for run_ in ledger.by_job[job]}
    assert pids == {worker.pid}, "every valid job ran in the one worker process"


# --------------------------------------------------------------------------- producers


async def test_a_batch_with_one_unencodable_value_writes_none_of_it(app_url: str) -> None:
    """Enqueue and publish refuse before the broker is called: nothing of the batch is
    stored (single enqueues: ``tests/integration/test_worker.py``)."""
    app = App(app_url)

    @app.task(name="bad.add", queue="bad")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.on("bad.topic", group="g")
    async def on_event(body: dict[str, Any]) -> None:
        return None

    try:
        with pytest.raises(SerializationError, match=r"argument 1 of 'bad\.add' \(object"):
            await add.enqueue_many([(1, 2), (3, object()), (5, 6)])  # type: ignore[list-item]
        with pytest.raises(SerializationError, match=r"bad\.topic"):
            await app.publish("bad.topic", {"when": object()})
        broker = await app.broker()
        stats = {s.queue: s.counters.enqueued for s in await broker.stats()}
        assert sum(stats.values()) == 0, stats
        assert [t.last_offset for t in await broker.topics()] in ([], [None])
    finally:
        await app.close()


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://:hunter2@127.0.0.1:1/0", "Redis at redis://:***@127.0.0.1:1/0 is unavailable"),
        ("postgresql://me:hunter2@127.0.0.1:1/db", "PostgreSQL at postgresql://me:***@"),
        ("sqlite:////no/such/dir/x.db", "its directory /no/such/dir does not exist"),
        ("mysql://localhost/db", "Unknown broker URL"),
    ],
)
def test_a_worker_on_a_dead_server_or_wrong_url_exits_with_one_clear_line(
    url: str, says: str, tmp_path: Path
) -> None:
    """``offload worker`` at start (a running worker's reconnects are G6's tests)."""
    ledger = {"OFFLOAD_FAULTS_LEDGER": str(tmp_path)}
    out = run_cli(
        url,
        "worker",
        "tests.faults.harness.probe:app",
        "--connect-timeout",
        "1",
        timeout=30,
        **ledger,
    )
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr
    assert says in text and "Traceback" not in text and "hunter2" not in text


async def test_an_error_quoting_a_nul_is_kept(broker: Broker) -> None:
    """A dead letter's message may quote hostile input raw (a task's ``ValueError(f"bad
    {value}")``); PostgreSQL's jsonb cannot hold NUL, so it is stored as U+FFFD there
    instead of failing the worker's whole settle batch."""
    await broker.enqueue(
        [
            EnqueueRequest(
                id="nul", queue="q", name="t", payload=b"{}", enqueued_at=broker.clock.now()
            )
        ]
    )  # type: ignore[attr-defined]
    [d] = await broker.claim(["q"], "w", 1, 30.0)
    error = ErrorRecord(
        reason="exception",
        type="ValueError",
        message="bad \x00 value",
        traceback="ValueError: bad \x00 value",
    )
    assert await broker.bury(d, error)
    rec = await broker.get_job("nul")
    assert rec is not None and rec.state == "dead"
    assert rec.errors[-1].message in ("bad \x00 value", "bad \ufffd value")
