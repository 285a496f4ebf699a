"""One outcome the broker refuses must not fail the others, nor stop the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from offload.brokers.base import Ack, Bury, Settlement
from offload.brokers.memory import MemoryBroker
from offload.errors import BrokerError
from offload.worker.settler import Settler
from tests.conformance.helpers import claim_all, req


class Picky(MemoryBroker):
    """Refuses any batch holding an ack whose result is the poison value."""

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if any(isinstance(s, Ack) and s.result == b"poison" for s in settlements):
            raise BrokerError("value out of range")
        return await super().settle(settlements)


async def test_a_refused_outcome_is_isolated_and_dead_lettered() -> None:
    broker = Picky()
    await broker.enqueue([req(broker) for _ in range(8)])
    ds = await claim_all(broker)
    settled: list[tuple[Settlement, bool]] = []
    settler = Settler(broker, lambda s, ok: settled.append((s, ok)))
    runner = asyncio.create_task(settler.run())
    for i, d in enumerate(ds):
        settler.submit(Ack(d, b"poison" if i == 5 else b"fine"))
    await settler.flush()
    runner.cancel()
    assert [ok for _, ok in settled] == [True] * 8
    states = [r.state.value for r in await broker.get_jobs([d.job_id for d in ds])]
    assert states == ["succeeded"] * 5 + ["dead"] + ["succeeded"] * 2
    [bad] = await broker.get_jobs([ds[5].job_id])
    assert bad is not None and bad.errors[-1].reason == "outcome_refused"
    assert "value out of range" in bad.errors[-1].message
    assert not any(isinstance(s, Bury) for s, _ in settled), "callers see what they sent"
