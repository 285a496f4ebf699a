"""Rate and concurrency limits shared by several workers, on every backend."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from offload import App
from offload.worker.worker import Worker


class Meter:
    """Counts jobs running at once, overall and per key."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.starts: list[float] = []

    async def run(self, key: str, pause: float) -> None:
        self.starts.append(time.monotonic())
        for k in (key, "*"):
            self.now[k] += 1
            self.peak[k] = max(self.peak[k], self.now[k])
        try:
            await asyncio.sleep(pause)
        finally:
            for k in (key, "*"):
                self.now[k] -= 1


def max_in_window(times: list[float], span: float) -> int:
    """The most events in any interval of ``span`` seconds."""
    ordered = sorted(times)
    return max(
        (sum(1 for t in ordered[i:] if t - start < span) for i, start in enumerate(ordered)),
        default=0,
    )


@asynccontextmanager
async def workers(app: App, n: int, **options: Any) -> AsyncIterator[list[Worker]]:
    """``n`` workers on one loop, each claiming on its own."""
    async with AsyncExitStack() as stack:
        made = []
        for _ in range(n):
            w = await app.worker(queues=("lim",), poll_s=0.05, **options)
            task = asyncio.create_task(w.run())
            stack.push_async_callback(asyncio.wait_for, task, 30)
            stack.callback(w.stop, 0)
            made.append(w)
        yield made


async def test_task_concurrency_holds_across_workers(app_url: str) -> None:
    app, meter = App(app_url), Meter()

    @app.task(name="lim.conc", queue="lim", concurrency=3)
    async def limited(i: int) -> None:
        await meter.run("task", 0.03)

    try:
        handles = await limited.enqueue_many([(i,) for i in range(30)])
        async with workers(app, 2, concurrency=10):
            for h in handles:
                await h.result(timeout=30)
        assert meter.peak["*"] == 3, "at most 3 at once, and the limit is used"
    finally:
        await app.close()


async def test_key_limit_holds_per_key_and_keys_run_side_by_side(app_url: str) -> None:
    app, meter = App(app_url), Meter()

    @app.task(name="lim.keyed", queue="lim", key_limit=2)
    async def keyed(key: str) -> None:
        await meter.run(key, 0.03)

    try:
        calls = [keyed.options(key=k).s(k) for _ in range(10) for k in ("a", "b")]
        handles = [await keyed.options(key=s.args[0]).enqueue(*s.args) for s in calls]
        async with workers(app, 2, concurrency=10):
            for h in handles:
                await h.result(timeout=30)
        assert meter.peak["a"] == 2 and meter.peak["b"] == 2
        assert meter.peak["*"] >= 3, "different keys run in parallel"
    finally:
        await app.close()


async def test_rate_limit_holds_across_workers_without_churn(app_url: str) -> None:
    app, meter = App(app_url), Meter()

    @app.task(name="lim.rate", queue="lim", rate="20/s")
    async def paced(i: int) -> None:
        await meter.run("rate", 0.0)

    try:
        handles = await paced.enqueue_many([(i,) for i in range(40)])
        async with workers(app, 2, concurrency=8):
            started = time.monotonic()
            for h in handles:
                await h.result(timeout=30)
            elapsed = time.monotonic() - started
        # A burst of 2 (a tenth of a second's worth), then one start every 50 ms.
        assert 38 / 20 * 0.9 <= elapsed <= 38 / 20 * 1.3, elapsed
        assert max_in_window(meter.starts, 1.0) <= 20 + 2 + 3, "20/s (+ burst, + jitter)"
        [stats] = await (await app.broker()).stats(["lim"])
        assert stats.counters.started - 40 <= 4, "jobs are not claimed and released in a loop"
    finally:
        await app.close()


async def test_long_waits_are_deferred_once_and_nothing_is_dropped(app_url: str) -> None:
    app, meter = App(app_url), Meter()

    @app.task(name="lim.slow_rate", queue="lim", rate="10/s")
    async def paced(i: int) -> None:
        await meter.run("rate", 0.0)

    try:
        handles = await paced.enqueue_many([(i,) for i in range(25)])
        async with workers(app, 1, concurrency=25) as [w]:
            w.runner.rate_gate.max_hold_s = 0.3  # hold ~3 jobs, defer the rest in order
            for h in handles:
                await h.result(timeout=30)
        [stats] = await (await app.broker()).stats(["lim"])
        assert stats.counters.succeeded == 25
        assert stats.counters.started - 25 <= 25, "each job deferred at most about once"
    finally:
        await app.close()
