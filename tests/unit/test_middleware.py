"""Middleware sees every enqueue and wraps every attempt, in registration order."""

from __future__ import annotations

import asyncio
from typing import Any

from offload import App, JobFailed
from offload.context import JobContext
from offload.message.envelope import Envelope
from offload.middleware import CallNext, Middleware


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def on_enqueue(self, envelope: Envelope) -> None:
        envelope.headers[f"seen-by-{self.name}"] = "1"

    async def around_execute(self, ctx: JobContext, call_next: CallNext) -> Any:
        self.log.append(f"{self.name}:before:{sorted(ctx.headers)}")
        try:
            return await call_next()
        finally:
            self.log.append(f"{self.name}:after")

    def on_outcome(self, ctx: JobContext, outcome: str, duration_s: float) -> None:
        self.log.append(f"{self.name}:{outcome}")


async def test_middleware_wraps_enqueue_execution_and_outcome() -> None:
    log: list[str] = []
    app = App("memory://", middleware=[Recorder("outer", log)])
    app.add_middleware(Recorder("inner", log))

    @app.task(name="ok")
    async def ok() -> int:
        log.append("run")
        return 1

    @app.task(name="bad")
    async def bad() -> None:
        raise ValueError("x")

    worker = await app.worker(queues=("default",), poll_s=0.05)
    task = asyncio.create_task(worker.run())
    assert await (await ok.enqueue()).result(timeout=5) == 1
    headers = "['seen-by-inner', 'seen-by-outer']"
    assert log == [
        f"outer:before:{headers}",
        f"inner:before:{headers}",
        "run",
        "inner:after",
        "outer:after",
        "outer:succeeded",
        "inner:succeeded",
    ]
    log.clear()
    try:
        await (await bad.enqueue()).result(timeout=5)
    except JobFailed:
        pass
    assert log[-2:] == ["outer:dead", "inner:dead"]
    worker.stop()
    await task
    await app.close()
