"""Tasks for the limit tests over real worker processes; each start and end is logged.

One append-only ledger file per process (``$OFFLOAD_TEST_LEDGER/<pid>.log``), lines of
``start|end job_id pid unix_time``.
"""

from __future__ import annotations

import asyncio
import os
import time

from offload import App, current_job

app = App()  # the broker comes from OFFLOAD_BROKER
_fd: int | None = None


def _log(kind: str) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["OFFLOAD_TEST_LEDGER"], f"{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{kind} {current_job().id} {os.getpid()} {time.time()}\n".encode())


@app.task(name="rl.paced", queue="rl", rate="50/s")
async def paced(n: int) -> int:
    _log("start")
    return n


@app.task(name="rl.capped", queue="rl", concurrency=3)
async def capped(n: int, pause: float = 0.1) -> int:
    _log("start")
    await asyncio.sleep(pause)
    _log("end")
    return n
