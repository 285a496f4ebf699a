"""Group commit for outcomes: many settlements, one broker call.

Job tasks hand their settlement to the :class:`Settler` and free their slot at once. The
settler waits one loop turn (so every job that finishes in the same turn joins the
batch), then writes the batch with one ``broker.settle`` call. While a batch is being
written the next one gathers, so under load batches grow by themselves and each fsync or
round trip is shared by many jobs; when idle a lone job is written without delay.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from offload.brokers.base import Bury, ErrorRecord
from offload.errors import BrokerError, BrokerUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from offload.brokers.base import Broker, Settlement

__all__ = ["Settler"]

log = logging.getLogger("offload.worker")


class Settler:
    """Batches settlements into ``broker.settle`` calls, retrying through outages."""

    def __init__(
        self,
        broker: Broker,
        on_settled: Callable[[Settlement, bool], None],
        *,
        max_batch: int = 500,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._broker = broker
        self._on_settled = on_settled
        self._max_batch = max_batch
        self._max_backoff_s = max_backoff_s
        self._pending: list[Settlement] = []
        self._writing = 0
        #: Settlements written so far (a burst worker compares it across a claim).
        self.written = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Settlements not yet written (queued, or in a write under way)."""
        return len(self._pending) + self._writing

    def submit(self, settlement: Settlement) -> None:
        """Queue a settlement for the next batch."""
        self._pending.append(settlement)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Write batches forever (cancel to stop; call :meth:`flush` first to drain)."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let jobs finishing in this loop turn join the batch
            self._wake.clear()
            await self._write_all()

    async def flush(self) -> None:
        """Return once everything submitted so far has been written."""
        if self._pending:
            self._wake.set()
        await self._idle.wait()

    async def _write_all(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._writing = len(batch)
            try:
                results = await self._write(batch)
            finally:
                self._writing = 0
            self.written += len(batch)
            for settlement, ok in zip(batch, results, strict=True):
                self._on_settled(settlement, ok)
        self._idle.set()

    async def _write(self, batch: list[Settlement]) -> list[bool]:
        """Write a batch, retrying through outages; isolate what the broker refuses."""
        delay = 0.05
        failures = 0
        while True:
            try:
                return await self._broker.settle(batch)
            except BrokerUnavailable as exc:
                log.warning(
                    "broker unavailable while recording %d outcome(s), retrying in %.1fs: %s",
                    len(batch),
                    delay,
                    exc,
                    extra={"action": "settle_retry"},
                )
            except BrokerError as exc:
                failures += 1
                if failures >= 2:
                    return await self._isolate(batch, exc)
                log.warning("broker error while recording outcomes (%s); retrying once", exc)
            await asyncio.sleep(delay)
            delay = min(self._max_backoff_s, delay * 2)

    async def _isolate(self, batch: list[Settlement], exc: BrokerError) -> list[bool]:
        """One settlement the broker refuses (a hostile value) must not fail the others, or
        stop the worker: split the batch until the bad one is alone, then bury it."""
        if len(batch) == 1:
            return [await self._refused(batch[0], exc)]
        half = len(batch) // 2
        return [*await self._write(batch[:half]), *await self._write(batch[half:])]

    async def _refused(self, settlement: Settlement, exc: BrokerError) -> bool:
        d = settlement.delivery
        log.error(
            "the broker refused the outcome of job %s (%s); dead-lettering it instead",
            d.job_id,
            exc,
            extra={
                "action": "settle_refused_by_broker",
                "job_id": d.job_id,
                "task": d.name,
                "attempt": d.attempts,
            },
        )
        if isinstance(settlement, Bury) and not settlement.follow_ups:
            return False  # even a plain burial is refused: the lease runs out, then recovery
        error = ErrorRecord(
            reason="outcome_refused",
            type=type(exc).__name__,
            message=f"the broker refused this job's outcome: {exc}"[:4000],
            attempt=d.attempts,
        )
        try:
            return (await self._broker.settle([Bury(d, error)]))[0]
        except BrokerError:
            log.exception("the broker refused even the dead-lettering of job %s", d.job_id)
            return False
