"""A test app whose tasks exercise every outcome a worker must handle.

Module-level so ``executor="process"`` tasks can be imported by child processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from offload import App, Cancel, Retry, constant, current_job, progress, progress_sync

app = App("memory://", default_queue="t")
ledger: list[tuple[str, int]] = []


@dataclass
class Point:
    x: int
    y: int


@app.task(name="t.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="t.sync_add")
def sync_add(a: int, b: int) -> int:
    return a + b


@app.task(name="t.norm")
def norm(p: Point) -> float:
    return (p.x**2 + p.y**2) ** 0.5


@app.task(name="t.flaky", retries=3, backoff=constant(0.05))
async def flaky(fail_times: int) -> int:
    ctx = current_job()
    ledger.append((ctx.id, ctx.attempt))
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return ctx.attempt


@app.task(name="t.not_retried", retries=3, retry_on=(ConnectionError,))
async def not_retried() -> None:
    raise ValueError("a bug, not a transient failure")


@app.task(name="t.explicit_retry", retries=1)
async def explicit_retry() -> str:
    if current_job().attempt == 1:
        raise Retry(delay=0.05, reason="not ready yet")
    return "ready"


@app.task(name="t.cancels_itself")
async def cancels_itself() -> None:
    raise Cancel("nothing to do")


@app.task(name="t.slow_async", timeout=0.2)
async def slow_async() -> None:
    await asyncio.sleep(30)


@app.task(name="t.slow_thread", timeout=0.2)
def slow_thread() -> None:
    time.sleep(5)


@app.task(name="t.slow_process", timeout=0.5, executor="process")
def slow_process() -> None:
    time.sleep(60)


@app.task(name="t.cpu", executor="process")
def cpu(n: int) -> int:
    progress_sync(0.5, "half way")
    return sum(i * i for i in range(n)) + os.getpid() * 0


@app.task(name="t.sleeper")
async def sleeper(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@app.task(name="t.reporter")
async def reporter(steps: int, pause: float) -> str:
    for i in range(1, steps + 1):
        await progress(i / steps, f"step {i}/{steps}")
        await asyncio.sleep(pause)
    return "done"


@app.task(name="t.unserialisable")
async def unserialisable() -> object:
    return object()


@app.task(name="t.record")
async def record(key: str, n: int) -> None:
    ledger.append((key, n))
    await asyncio.sleep(0.001)


@app.task(name="t.blocks_the_loop")
async def blocks_the_loop(seconds: float) -> str:
    time.sleep(seconds)  # a mistake users make: blocking work inside an async task
    return "done"


@app.task(name="t.longer_again")
async def longer_again(seconds: float) -> int:
    """Ends at once on its first run, takes ``seconds`` on every later one."""
    ledger.append(("longer_again", current_job().attempt))
    runs = sum(key == "longer_again" for key, _ in ledger)
    if runs > 1:
        await asyncio.sleep(seconds)
    return runs


@app.task(name="t.shorter_again")
async def shorter_again(seconds: float) -> int:
    """Takes ``seconds`` on its first run, ends at once on every later one."""
    ledger.append(("shorter_again", current_job().attempt))
    runs = sum(key == "shorter_again" for key, _ in ledger)
    if runs == 1:
        await asyncio.sleep(seconds)
        ledger.append(("shorter_again_first_run_ended", runs))
    return runs


@app.task(name="t.after")
async def after(value: int) -> None:
    ledger.append(("after", value))
