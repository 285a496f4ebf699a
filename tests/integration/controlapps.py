"""Tasks for the cancel and progress tests, one per executor (module level, so the
process pool's children can import them)."""

from __future__ import annotations

import asyncio
import time

from offload import App, constant, current_job, progress, progress_sync

app = App("memory://", default_queue="ctl")
ledger: list[tuple[str, str]] = []


@app.task(name="ctl.async_steps")
async def async_steps(steps: int, pause: float) -> str:
    for i in range(1, steps + 1):
        await progress(i / steps, f"async {i}/{steps}")
        await asyncio.sleep(pause)
    return "done"


@app.task(name="ctl.thread_steps")
def thread_steps(steps: int, pause: float) -> str:
    for i in range(1, steps + 1):
        progress_sync(i / steps, f"thread {i}/{steps}")
        time.sleep(pause)
    return "done"


@app.task(name="ctl.process_steps", executor="process")
def process_steps(steps: int, pause: float) -> str:
    for i in range(1, steps + 1):
        progress_sync(i / steps, f"process {i}/{steps}")
        time.sleep(pause)
    return "done"


@app.task(name="ctl.async_sleep")
async def async_sleep(seconds: float) -> str:
    ledger.append(("started", current_job().id))
    await asyncio.sleep(seconds)
    return "woke"


@app.task(name="ctl.cooperative")
def cooperative(limit: float) -> str:
    """A sync task that polls for a cancel request, as sync code must."""
    ctx = current_job()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ctx.cancel_requested:
            ledger.append(("saw cancel", ctx.id))
            return "stopped early"
        time.sleep(0.01)
    return "ran to the end"


@app.task(name="ctl.process_sleep", executor="process")
def process_sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@app.task(name="ctl.fails", retries=3, backoff=constant(0.5))
async def fails() -> None:
    ledger.append(("attempt", current_job().id))
    raise ConnectionError("try again later")
