"""Events over real worker processes: shared work, and a SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from offload.brokers import open_broker
from offload.brokers.base import group_queue
from tests.acceptance import crashapp
from tests.acceptance.harness import Ledger, start_worker, stop, wait_until
from tests.backends import backend_names

pytestmark = pytest.mark.slow
QUEUE = group_queue("crash.events", "consumers")


async def _publish(url: str, n: int, pause_ms: int) -> list[str]:
    crashapp.app._override = None
    crashapp.app.use_broker(url)
    try:
        ids = []
        for i in range(0, n, 500):
            ids += await crashapp.app.publish_many(
                "crash.events", [{"n": j, "pause_ms": pause_ms} for j in range(i, min(n, i + 500))]
            )
        return [f"{i}:consumers" for i in ids]
    finally:
        await crashapp.app.close()


async def _handled(url: str) -> int:
    broker = open_broker(url)
    await broker.open()
    try:
        [s] = await broker.stats([QUEUE])
        return s.counts.succeeded
    finally:
        await broker.close()


async def _live_workers(url: str) -> int:
    broker = open_broker(url)
    await broker.open()
    try:
        return len(await broker.workers())
    finally:
        await broker.close()


async def _ensure_group(url: str) -> None:
    crashapp.app._override = None
    crashapp.app.use_broker(url)
    await crashapp.app.open()  # creates the group before anything is published
    await crashapp.app.close()


@pytest.mark.parametrize("backend", backend_names(shared_only=True))
@pytest.mark.timeout(180)
def test_two_workers_share_a_group_without_handling_an_event_twice(
    backend: str, tmp_path: Path, app_url_for: object
) -> None:
    url = app_url_for(backend)  # type: ignore[operator]
    asyncio.run(_ensure_group(url))
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    workers = [start_worker(url, ledger, "-Q", QUEUE, "-c", "20") for _ in range(2)]
    try:
        assert wait_until(lambda: asyncio.run(_live_workers(url)) == 2, 30)
        ids = asyncio.run(_publish(url, 1000, pause_ms=5))
        assert wait_until(lambda: asyncio.run(_handled(url)) == 1000, 90)
    finally:
        for w in workers:
            assert stop(w) == 0
    record = Ledger.read(ledger)
    assert set(record.ends) == set(ids)
    assert record.rerun() == {}, "without a crash, no event is handled twice"
    pids = {pid for starts in record.starts.values() for _, pid in starts}
    assert len(pids) == 2, "both workers took part"


@pytest.mark.parametrize("backend", backend_names(shared_only=True))
@pytest.mark.timeout(180)
def test_sigkilled_subscriber_loses_no_event(
    backend: str, tmp_path: Path, app_url_for: object
) -> None:
    url = app_url_for(backend)  # type: ignore[operator]
    asyncio.run(_ensure_group(url))
    ids = asyncio.run(_publish(url, 600, pause_ms=30))
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    args = ("-Q", QUEUE, "-c", "10", "--lease", "2")
    victim = start_worker(url, ledger, *args)
    try:
        assert wait_until(lambda: len(Ledger.read(ledger).starts) >= 20, 30, 0.02)
        killed = victim.pid
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(0.5)
        victim = start_worker(url, ledger, *args)
        assert wait_until(lambda: asyncio.run(_handled(url)) == 600, 120)
    finally:
        stop(victim)
    record = Ledger.read(ledger)
    assert set(record.ends) == set(ids), "every event was handled after the restart"
    for event_id, starts in record.rerun().items():
        assert starts[0][1] == killed, f"{event_id} handled twice without a crash"
