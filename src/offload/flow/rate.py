"""Rate limits shared by every worker, with no hot loop of claims and releases.

A task's ``rate="50/s"`` is a token bucket kept in the broker (``take_tokens``), so the
limit holds across all workers and machines. Each worker fronts the bucket with one
:class:`RateGate`, which decides what a claimed job whose token is not there yet does:

* **wait in its slot** when the token is expected soon (within ``max_hold_s``): the
  job's local waiters line up behind one lock, so only one of them asks the broker at a
  time, and it sleeps exactly the wait the bucket reported before asking again. One
  round trip per token, jobs start in claim order, nothing goes back to the queue.
* **defer** when the wait is longer: the job goes back to the queue to run when its
  turn is expected. Deferrals are spread ``1/rate`` apart after the last one still
  outstanding, so a backlog is deferred once, in order, rather than claimed and released
  again and again; and the slot is free meanwhile for other work.

Excess jobs always wait; none is dropped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["RateGate"]


@dataclass(slots=True)
class _Bucket:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    not_before: float = 0.0  # loop time before which the broker has no token for us
    deferred_until: float = 0.0  # loop time the last deferred job was sent back for


class RateGate:
    """One worker's front for the broker's token buckets (see the module docstring).

    Args:
        take_tokens: the broker's ``take_tokens``.
        max_hold_s: the longest expected wait a claimed job spends in its slot; longer
            waits are deferred back to the queue.
    """

    def __init__(
        self,
        take_tokens: Callable[[str, float, float], Awaitable[float]],
        *,
        max_hold_s: float = 1.0,
    ) -> None:
        self._take = take_tokens
        self.max_hold_s = max_hold_s
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, bucket: str, per_s: float, burst: float) -> float:
        """Take one token from ``bucket`` (refilled at ``per_s`` up to ``burst``).

        Returns 0.0 once the token is taken, or the delay in seconds after which the job
        should run again (deferred: no token was taken). Cancelling the call takes no
        token.
        """
        loop = asyncio.get_running_loop()
        b = self._buckets.get(bucket)
        if b is None:
            b = self._buckets[bucket] = _Bucket()
        now = loop.time()
        if b.waiting == 0 and now >= b.not_before:
            wait = await self._take(bucket, per_s, burst)
            if wait <= 0:
                return 0.0
            now = loop.time()
            b.not_before = now + wait
        expected = max(0.0, b.not_before - now) + b.waiting / per_s
        if expected > self.max_hold_s:
            return self._defer(b, now, expected, per_s)
        b.waiting += 1
        try:
            async with b.lock:
                await self._wait_for_token(b, bucket, per_s, burst)
        finally:
            b.waiting -= 1
        return 0.0

    async def _wait_for_token(self, b: _Bucket, bucket: str, per_s: float, burst: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pause = b.not_before - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            wait = await self._take(bucket, per_s, burst)
            if wait <= 0:
                return
            b.not_before = loop.time() + wait

    @staticmethod
    def _defer(b: _Bucket, now: float, expected: float, per_s: float) -> float:
        due = max(now + expected, b.deferred_until + 1.0 / per_s)
        b.deferred_until = due
        return due - now
