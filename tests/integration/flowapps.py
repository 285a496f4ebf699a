"""Tasks for the workflow tests (module level, so worker processes can import them)."""

from __future__ import annotations

import asyncio

from offload import App, current_job

app = App("memory://", default_queue="wf")
ledger: list[tuple[str, object]] = []


@app.task(name="wf.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="wf.double")
async def double(x: int) -> int:
    return 2 * x


@app.task(name="wf.square")
def square(x: int) -> int:
    return x * x


@app.task(name="wf.total")
async def total(values: list[int], bonus: int = 0) -> int:
    ledger.append(("total", len(values)))
    return sum(values) + bonus


@app.task(name="wf.fail", retries=1)
async def fail(x: int) -> int:
    ledger.append(("fail", current_job().attempt))
    raise ValueError(f"cannot handle {x}")


@app.task(name="wf.flaky", retries=2)
async def flaky(x: int) -> int:
    if current_job().attempt == 1:
        raise ConnectionError("first attempt fails")
    return x + 1


@app.task(name="wf.note")
async def note(value: object, tag: str) -> None:
    ledger.append((tag, value))


@app.task(name="wf.slow")
async def slow(x: int) -> int:
    await asyncio.sleep(30)
    return x
