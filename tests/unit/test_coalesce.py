"""Group commit: concurrent calls share batches, each caller gets its own outcomes."""

from __future__ import annotations

import asyncio

import pytest

from offload.brokers._coalesce import Coalescer


async def test_concurrent_calls_share_batches_and_keep_their_outcomes() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)  # a transaction under way
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(write)
    results = await asyncio.gather(*(c.submit([i, i + 100]) for i in range(20)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert len(batches) < 5, "calls that arrive during a write join the next batch"
    assert [x for b in batches for x in b] == [x for i in range(20) for x in (i, i + 100)]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    calls = 0

    async def write(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ConnectionError("down")
        return items

    c: Coalescer[int, int] = Coalescer(write)
    first = asyncio.ensure_future(c.submit([1]))
    await asyncio.sleep(0)
    with pytest.raises(ConnectionError):
        await first
    assert await c.submit([2]) == [2]


async def test_a_cancelled_caller_does_not_strand_the_others() -> None:
    gate = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    c: Coalescer[int, int] = Coalescer(write)
    a = asyncio.ensure_future(c.submit([1]))
    await asyncio.sleep(0)
    b = asyncio.ensure_future(c.submit([2]))
    await asyncio.sleep(0)
    a.cancel()
    gate.set()
    assert await b == [2]
