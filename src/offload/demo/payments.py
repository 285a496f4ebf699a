"""The card processor the shop charges orders through (simulated).

It behaves like a real processor's API where it matters to the demo: a charge takes a
network round trip (``latency_s``), the processor serves at most ``max_concurrent``
charges of one merchant at a time (the rest wait their turn), and a charge is idempotent
per order (real processors take an idempotency key), so a retried job never charges a
card twice. Its limit is what bounds how many orders per second the shop can take, on
both the synchronous and the asynchronous path: ``max_concurrent / latency_s``.
"""

from __future__ import annotations

import asyncio
import hashlib

__all__ = ["PaymentProvider", "provider"]


class PaymentProvider:
    """A card processor's API, as seen by one merchant."""

    def __init__(self, latency_s: float = 0.03, max_concurrent: int = 2) -> None:
        self.latency_s = latency_s
        self.max_concurrent = max_concurrent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_concurrent)

    @property
    def capacity(self) -> float:
        """Charges per second the processor will do for us, at most."""
        return self.max_concurrent / self.latency_s

    def _slots_here(self) -> asyncio.Semaphore:
        # An asyncio semaphore belongs to one event loop; the demo may run several in
        # turn (tests do), so the limit is re-made for each new loop.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._slots = loop, asyncio.Semaphore(self.max_concurrent)
        return self._slots

    async def charge(self, order_id: str, amount_cents: int) -> str:
        """Charge ``amount_cents`` for ``order_id``; returns the charge id (the same one
        for the same order, however often it is asked)."""
        async with self._slots_here():
            await asyncio.sleep(self.latency_s)
        digest = hashlib.sha256(f"{order_id}:{amount_cents}".encode()).hexdigest()
        return f"ch_{digest[:16]}"


#: The processor every part of the shop charges through (one per process, like an SDK's
#: client; the demo runs its shop and its workers in one process, so both paths share it).
provider = PaymentProvider()
