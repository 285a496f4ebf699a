"""Tasks for the process-level tests: each run appends start/end lines to a ledger.

The ledger is one append-only file per process (``$OFFLOAD_TEST_LEDGER/<pid>.log``),
written with ``os.write`` on an ``O_APPEND`` descriptor: a SIGKILL loses nothing already
written, so the checker sees exactly which runs started and which finished.
"""

from __future__ import annotations

import asyncio
import os
import time

from offload import App, current_job

app = App()  # the broker comes from OFFLOAD_BROKER
_fd: int | None = None


def _log(line: str) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["OFFLOAD_TEST_LEDGER"], f"{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, line.encode())


@app.task(name="crash.work", queue="crash")
async def work(n: int, pause: float = 0.05) -> int:
    ctx = current_job()
    _log(f"start {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    await asyncio.sleep(pause)
    _log(f"end {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    return n


@app.task(name="crash.sync_work", queue="crash")
def sync_work(n: int, pause: float = 0.05) -> int:
    ctx = current_job()
    _log(f"start {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    time.sleep(pause)
    _log(f"end {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    return n


@app.on("crash.events", group="consumers")
async def consume(event: dict[str, int]) -> None:
    ctx = current_job()
    _log(f"start {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
    await asyncio.sleep(event.get("pause_ms", 20) / 1000)
    _log(f"end {ctx.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n")
