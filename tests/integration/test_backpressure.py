"""Back pressure on every backend: bounded queues hold under concurrent producers,
``block`` waits for room, ``reject`` says when to come back, and workers take only what
they can start."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from offload import App, JobState, QueueFull
from offload.brokers import scheme_of
from offload.tasks import Task
from offload.worker.worker import Worker
from tests.backends import BACKENDS, unavailable
from tests.integration.running import running_worker

PRODUCERS = 20
BOUND = 100


@dataclass
class Shop:
    """An app with one bounded queue and a task whose speed the test controls."""

    app: App
    work: Task[[float], int]
    gate: asyncio.Event = field(default_factory=asyncio.Event)


def make_shop(url: str, *, max_depth: int, when_full: str, block_timeout: float = 30.0) -> Shop:
    app = App(url)
    app.queue("bp", max_depth=max_depth, when_full=when_full, block_timeout=block_timeout)  # type: ignore[arg-type]
    gate = asyncio.Event()

    @app.task(name="bp.work", queue="bp")
    async def work(pause: float) -> int:
        if pause < 0:
            await gate.wait()  # a stalled job: runs until the test opens the gate
        else:
            await asyncio.sleep(pause)
        return 1

    return Shop(app, work, gate)


@asynccontextmanager
async def shops(url: str, n: int, **kw: Any) -> AsyncIterator[list[Shop]]:
    """``n`` producers' apps: separate connections, except on memory (one process store)."""
    if scheme_of(url) == "memory":
        one = make_shop(url, **kw)
        made = [one] * n
    else:
        made = [make_shop(url, **kw) for _ in range(n)]
    try:
        yield made
    finally:
        for shop in {id(s): s for s in made}.values():
            await shop.app.close()


def running(app: App, **options: Any) -> AbstractAsyncContextManager[Worker]:
    return running_worker(app, stop_grace_s=0, **{"queues": ("bp",), "poll_s": 0.05, **options})


@asynccontextmanager
async def watch_depth(app: App) -> AsyncIterator[list[int]]:
    """Sample the queue's pending count as fast as the broker answers."""
    seen: list[int] = []
    broker = await app.broker()

    async def poll() -> None:
        while True:
            [stats] = await broker.stats(["bp"])
            seen.append(stats.counts.pending)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(poll())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def pending(app: App) -> int:
    [stats] = await (await app.broker()).stats(["bp"])
    return stats.counts.pending


async def test_twenty_rejecting_producers_never_overshoot(app_url: str) -> None:
    async with shops(app_url, PRODUCERS, max_depth=BOUND, when_full="reject") as producers:
        accepted = 0
        rejected: list[QueueFull] = []

        async def produce(shop: Shop) -> None:
            nonlocal accepted
            for _ in range(20):
                try:
                    await shop.work.enqueue(0.0)
                    accepted += 1
                except QueueFull as exc:
                    rejected.append(exc)

        async with watch_depth(producers[0].app) as seen:
            await asyncio.gather(*(produce(s) for s in producers))
        assert accepted == BOUND and len(rejected) == PRODUCERS * 20 - BOUND
        assert max(seen) <= BOUND and await pending(producers[0].app) == BOUND
        assert all(e.max_depth == BOUND and e.depth >= BOUND for e in rejected)
        assert all(0 < e.retry_after_s <= 300 for e in rejected)


async def test_twenty_blocking_producers_slow_to_the_workers_pace(app_url: str) -> None:
    async with shops(app_url, PRODUCERS, max_depth=BOUND, when_full="block") as producers:
        app = producers[0].app
        per_producer = 15  # 300 jobs against a bound of 100

        async def produce(shop: Shop) -> None:
            for _ in range(per_producer):
                await shop.work.enqueue(0.002)

        async with watch_depth(app) as seen:
            producing = asyncio.gather(*(produce(s) for s in producers))
            while await pending(app) < BOUND:  # no worker yet: the queue fills, then blocks
                assert not producing.done()
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert not producing.done() and await pending(app) == BOUND
            async with running(app, concurrency=10):
                await asyncio.wait_for(producing, 90)
                while await pending(app):
                    await asyncio.sleep(0.05)
        [stats] = await (await app.broker()).stats(["bp"])
        assert stats.counters.enqueued == PRODUCERS * per_producer
        assert max(seen) == BOUND, "the bound held while 20 producers pressed against it"


async def test_block_resumes_when_a_worker_frees_room(app_url: str) -> None:
    async with shops(app_url, 1, max_depth=5, when_full="block") as [shop]:
        app = shop.app
        for _ in range(5):
            await shop.work.enqueue(0.0)
        blocked = asyncio.create_task(shop.work.enqueue(0.0))
        await asyncio.sleep(0.5)
        assert not blocked.done(), "the queue is full: enqueue must wait"

        def sync_enqueue() -> float:
            started = time.monotonic()
            shop.work.enqueue_sync(0.0)
            return time.monotonic() - started

        sync_blocked = asyncio.create_task(asyncio.to_thread(sync_enqueue))
        await asyncio.sleep(0.3)
        assert not sync_blocked.done(), "the sync form blocks its thread too"
        async with running(app, concurrency=1):
            freed_at = time.monotonic()
            handle = await asyncio.wait_for(blocked, 10)
            resumed_after = time.monotonic() - freed_at
            assert await handle.result(timeout=10) == 1
            assert await asyncio.wait_for(sync_blocked, 10) >= 0.3
        assert resumed_after < 2.0, "a blocked producer resumes soon after room appears"


async def test_block_gives_up_after_its_timeout(app_url: str) -> None:
    async with shops(app_url, 1, max_depth=2, when_full="block", block_timeout=0.3) as [shop]:
        await shop.work.enqueue_many([(0.0,), (0.0,)])
        started = time.monotonic()
        with pytest.raises(QueueFull) as full:
            await shop.work.enqueue(0.0)
        assert 0.3 <= time.monotonic() - started < 2.0
        assert (full.value.depth, full.value.max_depth) == (2, 2)
        assert "full" in str(full.value) and "try again in about" in str(full.value)


async def test_reject_says_when_to_come_back_from_the_measured_rate(app_url: str) -> None:
    async with shops(app_url, 1, max_depth=BOUND, when_full="reject") as [shop]:
        with pytest.raises(QueueFull) as cold:
            while True:
                await shop.work.enqueue(0.05)
        assert cold.value.retry_after_s == pytest.approx(1.0), "nothing measured yet"
        # Two slots at 50 ms: about 40 jobs/s, so a tenth of the bound (10) drains in 0.25 s.
        async with running(shop.app, concurrency=2):
            while await pending(shop.app) > BOUND - 20:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.1)  # the cached estimate expires
            with pytest.raises(QueueFull) as warm:
                while True:
                    await shop.work.enqueue(0.05)
        assert 0.1 <= warm.value.retry_after_s <= 0.8, warm.value.retry_after_s


async def test_a_stalled_worker_takes_no_more_than_its_slots(app_url: str) -> None:
    async with shops(app_url, 1, max_depth=1000, when_full="reject") as [shop]:
        app, broker = shop.app, await shop.app.broker()
        await shop.work.enqueue_many([(-1.0,)] * 3)  # these hang until the gate opens
        async with running(app, concurrency=3) as stalled:
            while stalled.running < 3:
                await asyncio.sleep(0.02)
            await shop.work.enqueue_many([(0.0,)] * 17)
            await asyncio.sleep(0.5)
            [stats] = await broker.stats(["bp"])
            assert (stats.counts.running, stats.counts.queued) == (3, 17)
            async with running(app, concurrency=4) as healthy:
                await _until(lambda: healthy.stats.succeeded == 17)
            assert stalled.running == 3 and stalled.stats.succeeded == 0
            shop.gate.set()
            await _until(lambda: stalled.stats.succeeded == 3)
        [stats] = await broker.stats(["bp"])
        assert stats.counts.succeeded == 20
        assert (await _job_states(app)) == {JobState.SUCCEEDED}


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _job_states(app: App) -> set[JobState]:
    page = await (await app.broker()).list_jobs(queue="bp", limit=100)
    return {j.state for j in page.jobs}


async def test_a_full_queue_rejects_inside_a_transaction(tmp_path: Path) -> None:
    """Transactional enqueue (PostgreSQL only) never blocks: it would hold the caller's
    transaction open."""
    import psycopg

    from offload.brokers._pg_conn import parse_url

    backend = BACKENDS["postgres"]
    reason = await backend.check()
    if reason:
        unavailable(reason)
    app_url = backend.make_url(tmp_path, uuid.uuid4().hex[:10])
    try:
        await _reject_in_transaction(app_url, parse_url(app_url).conninfo, psycopg)
    finally:
        await backend.cleanup(app_url)


async def _reject_in_transaction(app_url: str, conninfo: str, psycopg: Any) -> None:

    async with shops(app_url, 1, max_depth=2, when_full="block") as [shop]:
        await shop.work.enqueue_many([(0.0,), (0.0,)])
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            started = time.monotonic()
            with pytest.raises(QueueFull) as full:
                await shop.work.options(connection=conn).enqueue(0.0)
            await conn.rollback()
        assert time.monotonic() - started < 5, "no waiting while holding a transaction open"
        assert (full.value.depth, full.value.max_depth) == (2, 2)
        assert await pending(shop.app) == 2
