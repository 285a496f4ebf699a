"""G9 on Redis: a full server refuses loudly and drops nothing; a lossy one is called out.

* ``maxmemory`` reached with ``noeviction``: enqueue raises ``BrokerUnavailable`` saying
  Redis is out of memory; every batch is refused whole (no enqueue that was refused shows
  up later); every acknowledged job is still there; a worker started meanwhile stays up,
  and once memory is freed it drains the queue without a restart.
* A server without the append-only file, or with an evicting ``maxmemory-policy``, gets
  a loud warning in the worker's log at start; with ``?strict=1`` in the URL the broker
  refuses it (``BrokerError``) and the worker exits saying why.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from offload.brokers import open_broker
from offload.errors import BrokerError, BrokerUnavailable
from tests.acceptance.harness import wait_until
from tests.faults.harness import probe
from tests.faults.harness.checker import fetch_outcomes_sync
from tests.faults.harness.fixtures import make_redis
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


async def _enqueue_public(url: str, n: int) -> None:
    probe.app.use_broker(url)
    try:
        await probe.probe.enqueue_many([{"n": i} for i in range(n)])
    finally:
        await probe.app.close()


async def _refused_on_open(url: str) -> None:
    broker = open_broker(url)
    try:
        with pytest.raises(BrokerError, match="strict=1"):
            await broker.open()
    finally:
        await broker.close()


@pytest.mark.timeout(120)
def test_full_redis_refuses_enqueues_and_keeps_every_job(tmp_path: Path) -> None:
    server = make_redis(tmp_path / "redis", maxmemory="4mb")
    try:
        with FaultRun(server.url(), tmp_path, lease_s=2.0) as run:
            acked: list[str] = []
            for _ in range(200):
                batch = run.enqueue(100, seconds=0.02)
                acked += batch
                if not batch:
                    break
            assert 0 < len(acked) < 20_000, "the server never filled up"
            with pytest.raises(BrokerUnavailable, match="out of memory") as refused:
                asyncio.run(_enqueue_public(run.url, 100))
            assert "maxmemory" in str(refused.value)
            before = fetch_outcomes_sync(run.url, acked)
            assert all(o is not None and o.state == "queued" for o in before.values())

            worker = run.start_worker()
            run.wait_ready(worker)
            time.sleep(3.0)
            assert worker.alive(), worker.output()[-3000:]
            subprocess.run(
                ["redis-cli", "-p", str(server.port), "CONFIG", "SET", "maxmemory", "0"],
                check=True,
                capture_output=True,
            )
            assert run.wait_final(acked, timeout=60), worker.output()[-3000:]
            run.stop_workers()
            report = run.report(backend="redis")
    finally:
        server.stop()
    print(f"\n[redis full] {report.summary()}")
    assert report.valid, report.summary()
    assert report.completed == len(acked)
    assert report.indeterminate > 0 and report.recovered == 0, "a refused batch was stored"
    assert "out of memory" in worker.output()


@pytest.mark.parametrize(
    ("config", "warning"),
    [
        ({"appendonly": False}, "without the append-only file"),
        ({"policy": "allkeys-lru"}, "maxmemory-policy allkeys-lru"),
    ],
)
@pytest.mark.timeout(60)
def test_lossy_redis_is_called_out(tmp_path: Path, config: dict[str, object], warning: str) -> None:
    server = make_redis(tmp_path / "redis", **config)  # type: ignore[arg-type]
    try:
        with FaultRun(server.url(), tmp_path) as run:
            worker = run.start_worker()
            run.wait_ready(worker)
            assert warning in worker.output()
            run.stop_workers()
        strict = server.url(strict="1")
        with FaultRun(strict, tmp_path / "strict") as run:
            refused = run.start_worker()
            assert refused.proc.wait(30) != 0
            assert "strict=1" in refused.output() and warning in refused.output()
        asyncio.run(_refused_on_open(strict))
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_strict_accepts_a_durable_redis(tmp_path: Path) -> None:
    server = make_redis(tmp_path / "redis")
    try:

        async def open_close() -> None:
            broker = open_broker(server.url(strict="1"))
            await broker.open()
            await broker.close()

        asyncio.run(open_close())
        with pytest.raises(Exception, match="strict=maybe"):
            open_broker(server.url(strict="maybe"))
    finally:
        server.stop()
    assert wait_until(lambda: not server.ping(), 5)
