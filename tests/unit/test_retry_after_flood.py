"""A flood of producers that find a queue full together pays for one rate measurement."""

from __future__ import annotations

import asyncio

from offload.brokers.memory import MemoryBroker
from offload.metrics.estimates import RetryAfter


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def stats(self, queues=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        await asyncio.sleep(0.01)  # a round trip: the others arrive while it is out
        return await super().stats(queues)


async def test_concurrent_misses_share_one_measurement() -> None:
    broker = CountingBroker()
    await broker.open()
    estimate = RetryAfter()
    answers = await asyncio.gather(*(estimate(broker, "q", 10, 10) for _ in range(50)))
    assert broker.calls == 1
    assert len(set(answers)) == 1
    await estimate(broker, "q", 10, 10)  # cached
    assert broker.calls == 1
    await broker.close()
