"""What the SQLite broker promises beyond the conformance suite: several processes on one
file, durability settings, schema versions, clear errors, and prompt wake-ups."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from offload.brokers import open_broker
from offload.brokers._sqlite_db import Database, Migration, Queries, SqliteSettings
from offload.brokers.base import Ack, EnqueueRequest, MarkCancelled
from offload.brokers.sqlite import SqliteBroker
from offload.clock import system_clock
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError, SchemaOutOfDate

ROOT = Path(__file__).resolve().parents[2]


def req(queue: str = "q", payload: bytes = b"p", **kw: object) -> EnqueueRequest:
    return EnqueueRequest(
        id=uuid.uuid4().hex,
        queue=queue,
        name="t",
        payload=payload,
        enqueued_at=time.time(),
        **kw,  # type: ignore[arg-type]
    )


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.sqlite_child", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------------- URLs


def test_url_paths_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SqliteSettings.from_url("sqlite:///data/x.db").path == str(tmp_path / "data/x.db")
    assert SqliteSettings.from_url("sqlite:////var/lib/x.db").path == "/var/lib/x.db"
    s = SqliteSettings.from_url("sqlite:///x.db?synchronous=normal&busy_timeout_ms=250")
    assert (s.synchronous, s.busy_timeout_ms, s.migrate) == ("NORMAL", 250, True)
    assert SqliteSettings.from_url("sqlite:///x.db").synchronous == "FULL"


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite://host/x.db", "no host"),
        ("sqlite://", "names no database file"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///x.db?synchronous=OFF", "OFF is not offered"),
        ("sqlite:///x.db?journal=delete", "unknown option"),
        ("sqlite:///x.db?busy_timeout_ms=soon", "milliseconds"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        open_broker(url)


# --------------------------------------------------------------------------- durability


async def test_wal_full_sync_and_busy_timeout_are_in_force(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    async with SqliteBroker(f"sqlite:///{path}") as broker:
        await broker.enqueue([req()])
        await broker.claim(["q"], "w", 1, 30)  # claims commit at NORMAL, then restore FULL
        p = await broker.pragmas()
        assert p["journal_mode"] == "wal"
        assert p["synchronous"] == 2, "FULL: an acknowledged enqueue survives a power cut"
        assert p["busy_timeout"] == 5000
        assert p["user_version"] == len(_packaged())
    async with SqliteBroker(f"sqlite:///{path}?synchronous=NORMAL") as broker:
        assert (await broker.pragmas())["synchronous"] == 1
    with sqlite3.connect(path) as con:  # WAL is a property of the file: any reader sees it
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_each_commit_runs_at_the_durability_it_promises(tmp_path: Path) -> None:
    """Enqueue and settle commit at FULL (fsync); a claim, whose loss in a power cut only
    reruns a job, commits at NORMAL and puts FULL back at once."""
    async with SqliteBroker(f"sqlite:///{tmp_path / 'sync.db'}") as broker:
        trace: list[str] = []
        con = broker._db.con  # type: ignore[union-attr]
        await broker._call(con.set_trace_callback, trace.append)

        def commits() -> list[str]:
            """The synchronous level in force at each COMMIT since the last call."""
            level, out = "FULL", []
            for stmt in trace:
                if stmt.startswith("PRAGMA synchronous="):
                    level = stmt.partition("=")[2]
                elif stmt == "COMMIT":
                    out.append(level)
            trace.clear()
            return out

        await broker.enqueue([req() for _ in range(3)])
        assert commits() == ["FULL"]
        got = await broker.claim(["q"], "w", 10, 30)
        assert commits() == ["NORMAL"]
        assert (await broker.pragmas())["synchronous"] == 2
        await broker.settle([Ack(d) for d in got])
        assert commits() == ["FULL"]


def test_an_acknowledged_enqueue_survives_a_killed_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = child("enqueue-and-die", url, "survivor")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err
    assert out.strip() == "queued"

    async def check() -> None:
        async with SqliteBroker(url) as broker:
            rec = await broker.get_job("survivor")
            assert rec is not None and rec.state == "queued"

    asyncio.run(check())


# --------------------------------------------------------------------------- schema


def _packaged() -> list[Migration]:
    from offload.brokers._sqlite_db import packaged_migrations

    return packaged_migrations()


def test_an_older_schema_is_migrated_on_open_keeping_its_data(tmp_path: Path) -> None:
    """The runner applies the missing steps in order, in one transaction, on open."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    settings = SqliteSettings.from_url(url)
    v1 = Migration(1, "first", "CREATE TABLE a (x INTEGER);")
    v2 = Migration(
        2, "second", "ALTER TABLE a ADD COLUMN y TEXT DEFAULT 'new';\nCREATE INDEX a_x ON a (x);"
    )
    db = Database.open(settings, url, system_clock, migrations=[v1])
    db.con.execute("INSERT INTO a (x) VALUES (7)")
    db.close()
    db = Database.open(settings, url, system_clock, migrations=[v1, v2])
    assert db.con.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.con.execute("SELECT x, y FROM a").fetchall() == [(7, "new")]
    db.close()
    v3 = Migration(3, "third", "CREATE TABLE b (z INTEGER);")
    refusing = SqliteSettings.from_url(url + "?migrate=false")
    with pytest.raises(SchemaOutOfDate, match="version 2, this offload needs 3"):
        Database.open(refusing, url, system_clock, migrations=[v1, v2, v3])


async def test_packaged_schema_is_created_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with SqliteBroker(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(_packaged())
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "stats", "events", "named_leases", "kv", "workers"} <= tables


async def test_migrate_false_refuses_an_unmigrated_file(tmp_path: Path) -> None:
    broker = SqliteBroker(f"sqlite:///{tmp_path / 'n.db'}?migrate=false")
    with pytest.raises(SchemaOutOfDate, match="migrate=false"):
        await broker.open()


async def test_a_schema_from_a_newer_offload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA user_version=99")
    with pytest.raises(BrokerError, match=r"newer than this offload understands.*Upgrade"):
        await SqliteBroker(f"sqlite:///{path}").open()


async def test_concurrent_first_opens_create_the_schema_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    brokers = [SqliteBroker(url) for _ in range(4)]
    await asyncio.gather(*(b.open() for b in brokers))
    outs = await asyncio.gather(*(b.enqueue([req()]) for b in brokers))
    assert [o[0].status for o in outs] == ["queued"] * 4
    for b in brokers:
        await b.close()


# --------------------------------------------------------------------------- clear errors


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(BrokerError, match=r"is not an SQLite database.*move this one away") as e:
        await SqliteBroker(f"sqlite:///{path}").open()
    assert isinstance(e.value.__cause__, sqlite3.DatabaseError)
    assert path.read_text().startswith("these are my notes"), "never overwrite a user's file"


@pytest.mark.parametrize(
    ("where", "hint"),
    [
        ("missing/dir/x.db", "directory .* does not exist. Create the directory"),
        ("afile/x.db", "is not a directory"),
        ("adir", "is a directory. Point the URL at a file"),
    ],
)
async def test_a_path_that_cannot_hold_a_database(tmp_path: Path, where: str, hint: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(BrokerError, match=hint):
        await SqliteBroker(f"sqlite:///{tmp_path / where}").open()


async def test_an_unwritable_directory(tmp_path: Path) -> None:
    # /proc exists but no one may create files in it, not even root.
    with pytest.raises(BrokerError, match=r"cannot be opened.*may create files there") as e:
        await SqliteBroker("sqlite:////proc/offload-test.db").open()
    assert isinstance(e.value.__cause__, sqlite3.Error)


async def test_calls_before_open_say_so(tmp_path: Path) -> None:
    broker = SqliteBroker(f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(BrokerError, match=r"not open: call `await broker.open\(\)`"):
        await broker.enqueue([req()])


async def test_a_held_lock_is_unavailable_and_never_blocks_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SqliteBroker(f"sqlite:///{path}?busy_timeout_ms=300") as broker:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        beat = asyncio.create_task(ticker())
        with pytest.raises(BrokerUnavailable, match="locked by another connection for 300 ms"):
            await broker.enqueue([req()])
        beat.cancel()
        assert ticks >= 20, "the event loop must keep running while the broker waits"
        other.execute("ROLLBACK")
        other.close()
        [out] = await broker.enqueue([req()])
        assert out.status == "queued"


# --------------------------------------------------------------------------- many processes


async def test_many_processes_claim_each_job_exactly_once(tmp_path: Path) -> None:
    """Four worker processes and this producer on one file: every job is delivered once
    (leases never expire here), none is lost, every ack is accepted."""
    url = f"sqlite:///{tmp_path / 'mp.db'}"
    n = 3000
    async with SqliteBroker(url) as broker:
        ids = [o.job_id for o in await broker.enqueue([req("mp") for _ in range(n // 2)])]
        outs = [tmp_path / f"w{i}.json" for i in range(4)]
        procs = [child("worker", url, str(out)) for out in outs]
        for _ in range(n // 2 // 50):  # the rest arrives while the workers run
            ids += [o.job_id for o in await broker.enqueue([req("mp") for _ in range(50)])]
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 90
        while (await broker.stats(["mp"]))[0].counts.succeeded < n:
            assert time.monotonic() < deadline, "workers did not drain the queue"
            assert all(p.poll() is None for p in procs), [
                p.stderr.read() for p in procs if p.stderr
            ]
            await asyncio.sleep(0.05)
        await broker.kv_set("stop", b"1")
        for p in procs:
            _, err = await asyncio.to_thread(p.communicate, timeout=60)
            assert p.returncode == 0, err
        reports = [json.loads(out.read_text()) for out in outs]
        acked = [job for r in reports for job in r["acked"]]
        assert sum(r["refused"] for r in reports) == 0
        assert len(acked) == len(set(acked)) == n, "each job delivered exactly once"
        assert set(acked) == set(ids), "no job lost"
        assert all(r["acked"] for r in reports), "every process took part"
        [stats] = await broker.stats(["mp"])
        assert (stats.counts.succeeded, stats.counts.running, stats.counts.pending) == (n, 0, 0)
        assert stats.counters.started == n


# --------------------------------------------------------------------------- wake-ups


async def test_brokers_in_one_process_share_wakeups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    async with SqliteBroker(url) as producer, SqliteBroker(url) as consumer:
        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(consumer.claim(["q"], "w", 1, 30, wait_s=5))
        await asyncio.sleep(0.3)  # long enough for the poll to back off to its slowest
        start = loop.time()
        await producer.enqueue([req()])
        [d] = await waiting
        assert loop.time() - start < 0.02, "the shared notifier wakes the claim at once"
        assert d.queue == "q"


async def test_wakeup_across_processes_p99_under_20ms(tmp_path: Path) -> None:
    """A claim waiting in another process wakes on the datagram ping, not the 50 ms poll.

    Latency runs from the producer's commit (its enqueue returning) to the claim returning
    in the other process; the producer's own fsync is not the wake-up's to pay.
    """
    url = f"sqlite:///{tmp_path / 'lat.db'}"
    warmup, count = 5, 80
    committed: dict[str, float] = {}
    async with SqliteBroker(url) as broker:
        proc = child("waiter", url, str(warmup + count))
        assert proc.stdout is not None
        assert await asyncio.to_thread(proc.stdout.readline) == "ready\n"
        for i in range(warmup + count):
            await asyncio.sleep(0.06)  # idle long enough for the poll to back off to 50 ms
            await broker.enqueue([req("lat", payload=str(i).encode())])
            committed[str(i)] = time.time()
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err
    claimed = dict(line.split() for line in out.splitlines())
    latencies = sorted(
        max(0.0, float(claimed[str(i)]) - committed[str(i)]) for i in range(warmup, warmup + count)
    )
    p99 = latencies[int(0.99 * count) - 1]
    median = statistics.median(latencies)
    assert p99 < 0.020, f"p99 {p99 * 1000:.1f} ms, median {median * 1000:.1f} ms"


async def test_wake_sockets_are_cleaned_up(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    wake_dir = Path(f"{path}.wake")
    async with SqliteBroker(f"sqlite:///{path}") as broker:
        assert await broker.claim(["q"], "w", 1, 30, wait_s=0.05) == []
        assert len(list(wake_dir.glob("*.sock"))) == 1, "a waiting claim listens beside the db"
    assert list(wake_dir.glob("*.sock")) == [], "closing removes this process's socket"
    stale = wake_dir / "999999-1.sock"  # a process that died without closing
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()
    async with SqliteBroker(f"sqlite:///{path}") as broker:
        await broker.enqueue([req()])  # its ping finds nobody there and removes the file
    assert not stale.exists()


# --------------------------------------------------------------------------- plans


def test_claims_walk_the_ready_index_whatever_else_is_stored(tmp_path: Path) -> None:
    """Claim cost must not grow with delayed, running or finished jobs: every claim-path
    statement searches a partial index, never scans the table."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    db = Database.open(SqliteSettings.from_url(url), url, system_clock)
    q = Queries.load()
    checks = {
        q.queue_has_work: "jobs_ready",
        q.claim: "jobs_ready",
        q.any_due: "jobs_scheduled",
        q.promote_scheduled: "jobs_scheduled",
        q.promote_retrying: "jobs_retrying",
        q.recover_expired: "jobs_leases",
        q.prune_jobs: "jobs_expiry",
        q.ack: "INTEGER PRIMARY KEY",  # the rowid rides in the lease token
        q.extend: "INTEGER PRIMARY KEY",
        q.ack_batch.replace("(?batch)", "(?, ?, ?, ?), (?, ?, ?, ?)"): "INTEGER PRIMARY KEY",
        q.get_jobs: "jobs_id",
    }
    for sql, index in checks.items():
        numbered = max(int(n) for n in re.findall(r"\?(\d+)", sql))
        params = [None] * (numbered + len(re.findall(r"\?(?!\d)", sql)))
        plan = " | ".join(r[3] for r in db.con.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert index in plan and "SCAN jobs" not in plan, plan
    db.close()


async def test_a_stale_lease_never_settles_a_job_that_reused_its_rowid(tmp_path: Path) -> None:
    """Lease tokens carry the rowid; SQLite reuses the highest rowid after a delete, so a
    new job can get an old token. The id check inside every fenced statement refuses it."""
    async with SqliteBroker(f"sqlite:///{tmp_path / 'r.db'}") as broker:
        [old] = await broker.enqueue([req()])
        [stale] = await broker.claim(["q"], "w", 1, 30)
        assert await broker.cancel([old.job_id]) == ["running"]
        assert await broker.settle([MarkCancelled(stale)]) == [True]
        assert await broker.delete([old.job_id]) == 1
        [new] = await broker.enqueue([req()])
        [fresh] = await broker.claim(["q"], "w", 1, 30)
        assert fresh.job_id == new.job_id
        assert fresh.lease_token == stale.lease_token, "same rowid, same claim count"
        assert await broker.ack(stale) is False
        assert (
            await broker.settle([Ack(stale), Ack(stale, b"x"), Ack(stale), Ack(stale)])
            == [False] * 4
        )
        assert await broker.extend([stale], 30) == ["lost"]
        assert (await broker.get_job(new.job_id)).state == "running"  # type: ignore[union-attr]
        assert await broker.ack(fresh)


async def test_empty_and_missing_keys_stay_distinct(tmp_path: Path) -> None:
    """Missing keys and results travel as 0 in the hottest statements; "" must stay ""."""
    async with SqliteBroker(f"sqlite:///{tmp_path / 'e.db'}") as broker:
        [a] = await broker.enqueue([req(key="", dedupe_key="")])
        [dup] = await broker.enqueue([req(dedupe_key="")])
        assert dup.status == "duplicate" and dup.job_id == a.job_id
        ids = [a.job_id] + [o.job_id for o in await broker.enqueue([req() for _ in range(5)])]
        recs = await broker.get_jobs(ids[:2])
        assert [(r.key, r.dedupe_key) for r in recs if r] == [("", ""), (None, None)]
        got = await broker.claim(["q"], "w", 10, 30)
        results = [None, b"", b"x", None, b"\x00"]  # one set-based batch ...
        assert (
            await broker.settle([Ack(d, r) for d, r in zip(got[:5], results, strict=True)])
            == [True] * 5
        )
        assert await broker.ack(got[5], b"")  # ... and one ack on its own
        recs = await broker.get_jobs([d.job_id for d in got])
        assert [r.result for r in recs if r] == [*results, b""]


async def test_wait_job_sees_a_result_written_by_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'res.db'}"
    async with SqliteBroker(url) as broker:
        proc = child("worker", url, str(tmp_path / "w.json"))
        try:
            for _ in range(5):
                [out] = await broker.enqueue([req("mp")])
                rec = await broker.wait_job(out.job_id, timeout_s=30)
                assert rec is not None and rec.state == "succeeded"
                assert rec.result == f"w{proc.pid}".encode(), "acked by the other process"
        finally:
            await broker.kv_set("stop", b"1")
            _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err
