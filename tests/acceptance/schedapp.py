"""An app with one schedule and a small workflow, for the process-level tests."""

from __future__ import annotations

import asyncio
import os
import time

from offload import App, current_job

app = App()  # the broker comes from OFFLOAD_BROKER


@app.every(seconds=1, name="sched.tick", grace=30, queue="sched")
async def tick() -> None:
    """Does nothing: the tests count the tick jobs the schedulers enqueue."""


def _log(line: str) -> None:
    folder = os.environ.get("OFFLOAD_TEST_LEDGER")
    if folder:
        fd = os.open(
            os.path.join(folder, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        os.write(fd, line.encode())
        os.close(fd)


@app.task(name="flow.step", queue="flow", retries=2)
async def step(total: int, add: int, pause: float = 0.3) -> int:
    ctx = current_job()
    _log(f"start {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    await asyncio.sleep(pause)
    _log(f"end {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    return total + add
