"""G1/G6/G9: the backend dies mid-run and comes back; nothing acknowledged is lost.

* Redis ``kill -9`` (``appendonly yes``, ``appendfsync always``) and restart on the same
  port; PostgreSQL ``pg_ctl stop -m immediate`` and restart (WAL replay). Workers and a
  producer keep running through the outage: every acknowledged job completes, and each
  worker starts a job again within max backoff (5 s) + 5 s of the server being back.
* SQLite has no server to kill: random worker and producer processes are SIGKILLed
  mid-write instead; afterwards ``PRAGMA integrity_check`` is ``ok`` and nothing
  acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest

from offload.brokers import open_broker
from offload.brokers.base import LeaseState
from offload.clock import FakeClock
from tests.acceptance.harness import wait_until
from tests.conformance.helpers import put
from tests.faults.harness import LONG, scale
from tests.faults.harness.checker import History
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.faults.harness.fixtures import FaultBackend

pytestmark = pytest.mark.slow

CONCURRENCY = 5
LEASE_S = 2.0
MAX_BACKOFF_S = 5.0  # the worker's claim backoff limit
RESUME_BOUND_S = MAX_BACKOFF_S + 5.0


def _acknowledged(run: FaultRun) -> list[str]:
    events = History.read(run.history_dir)
    return sorted(
        {i for e in events if e["f"] == "enqueue" and e["type"] == "ok" for i in e["ids"]}
    )


@pytest.mark.parametrize("fault_backend", ["redis", "postgres"], indirect=True)
@pytest.mark.timeout(1200 if LONG else 120)
def test_server_killed_and_restarted(fault_backend: FaultBackend, tmp_path: Path) -> None:
    server = fault_backend.server
    assert server is not None
    outages = scale(1, 5)
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, concurrency=CONCURRENCY) as run:
        run.enqueue(scale(400, 3000), seconds=0.2)
        workers = [run.start_worker(), run.start_worker()]
        producer = run.start_producer("--count", "200", "--batch", "10", "--pace", "0.2")
        resumed: list[float] = []
        for _ in range(outages):
            done = run.ends()
            assert wait_until(lambda d=done: run.ends() >= d + 50, 30), "no progress"
            server.crash()
            run.history.nemesis("backend_kill", None, backend=fault_backend.name)
            time.sleep(2.0)
            server.start()
            back = time.monotonic()
            run.history.nemesis("backend_ready", None, backend=fault_backend.name)
            assert wait_until(
                lambda b=back: len(run.first_start_after(b)) == len(workers), RESUME_BOUND_S + 5
            ), [w.output()[-3000:] for w in workers]
            firsts = run.first_start_after(back)
            resumed.append(max(firsts[w.pid] for w in workers) - back)
        assert producer.wait(120) == 0, "the producer gave up"
        assert all(w.alive() for w in workers), "a worker died with the backend"
        assert run.wait_final(_acknowledged(run), timeout=scale(120, 600)), "not drained"
        run.stop_workers()
        report = run.report(backend=fault_backend.name, resumed_after_s=resumed)
    print(f"\n[{fault_backend.name} restart] {report.summary()}; workers resumed after {resumed}")
    assert report.valid, report.summary()
    assert report.acknowledged >= 400
    assert max(resumed) <= RESUME_BOUND_S, resumed
    # Leases held through an outage may expire: each job held then may run once more,
    # and every duplicate is one of those.
    assert report.outages == outages
    assert report.unexplained_duplicates == 0, report.summary()
    assert report.reruns_running <= outages * len(workers) * CONCURRENCY, report.summary()


@pytest.mark.parametrize("fault_backend", ["sqlite"], indirect=True)
@pytest.mark.timeout(1200 if LONG else 120)
def test_sqlite_processes_killed_mid_write(fault_backend: FaultBackend, tmp_path: Path) -> None:
    kills = scale(8, 60)
    rng = random.Random(1)
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, concurrency=CONCURRENCY) as run:
        producer_args = ("--count", "3000", "--batch", "5", "--pace", "0.03")
        workers = [run.start_worker(), run.start_worker()]
        producers = [run.start_producer(*producer_args), run.start_producer(*producer_args)]
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.0))
            if rng.random() < 0.5:
                i = rng.randrange(len(workers))
                run.kill(workers[i])
                workers[i] = run.start_worker()
            else:
                i = rng.randrange(len(producers))
                run.kill_producer(producers[i])
                producers[i] = run.start_producer(*producer_args)
        for proc in producers:
            run.kill_producer(proc)
        assert run.wait_final(_acknowledged(run), timeout=scale(120, 600)), "not drained"
        run.stop_workers()
        report = run.report(backend="sqlite")
    path = fault_backend.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchall()
    print(f"\n[sqlite kills] {report.summary()}; integrity {integrity}")
    assert integrity == [("ok",)]
    assert report.valid, report.summary()
    assert report.acknowledged > 0
    assert report.unexplained_duplicates == 0, report.summary()
    assert report.reruns_running <= report.kills * CONCURRENCY, report.summary()


@pytest.mark.parametrize("fault_backend", ["postgres"], indirect=True)
async def test_postgres_lease_counts_from_when_the_statement_runs(
    fault_backend: FaultBackend,
) -> None:
    """After a wait for a pooled connection (a restarting server), a claim still grants
    the whole lease and a settle is fenced by the time it runs (found by the restart
    test: leases granted from the time the claim was *asked* were expired at birth)."""
    clock = FakeClock()
    broker = open_broker(fault_backend.url, clock=clock)
    await broker.open()
    try:
        await put(broker)
        pool = broker._pool  # type: ignore[attr-defined]
        connection = pool.connection

        @contextlib.asynccontextmanager
        async def after_a_wait(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            clock.advance(5.0)
            async with connection(*args, **kwargs) as conn:
                yield conn

        pool.connection = after_a_wait
        [d] = await broker.claim(["q"], "w1", 1, lease_s=2.0)
        assert d.lease_expires == clock.now() + 2.0
        assert await broker.extend([d], 2.0) == [LeaseState.LOST]  # 5 s passed: expired
        assert await broker.ack(d) is False
    finally:
        await broker.close()
