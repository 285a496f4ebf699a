"""Estimates made at enqueue time: how long a producer should wait before trying again.

When a bounded queue is full, :class:`~offload.errors.QueueFull` carries ``retry_after_s``
(what an HTTP layer sends as ``Retry-After``). It is the time the queue needs to drain a
tenth of its bound (at least one job) at its **measured completion rate**: completions
among its most recent finished jobs, over the time from the oldest of them to now (see
:func:`offload.metrics.littles_law.completion_rate`). With too few completions to measure,
the capacity of the live workers serving the queue (slots / mean service time) stands in;
with neither, one second. The result is clamped to [0.05 s, 300 s].
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from offload.metrics.littles_law import completion_rate

if TYPE_CHECKING:
    from offload.brokers.base import Broker, QueueStats

__all__ = ["RetryAfter", "retry_after_s"]

MIN_RETRY_AFTER_S = 0.05
MAX_RETRY_AFTER_S = 300.0
UNKNOWN_RETRY_AFTER_S = 1.0


def retry_after_s(depth: int, max_depth: int, rate: float | None) -> float:
    """Seconds to drain a tenth of ``max_depth`` (plus any overshoot) at ``rate`` jobs/s."""
    if rate is None or rate <= 0:
        return UNKNOWN_RETRY_AFTER_S if rate is None else MAX_RETRY_AFTER_S
    need = max(0, depth - max_depth) + max(1, math.ceil(max_depth / 10))
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, need / rate))


def _capacity(stats: QueueStats, slots: int) -> float | None:
    c = stats.counters
    attempts = c.succeeded + c.dead + c.retried
    if slots <= 0 or attempts <= 0 or c.service_s <= 0:
        return None
    return slots / (c.service_s / attempts)


class RetryAfter:
    """Measures a queue's completion rate for ``retry_after_s``, cached per queue.

    The cache (``cache_s``, default one second) keeps a flood of rejected producers from
    each paying the measurement's round trips; producers that miss the cache together
    share one measurement.
    """

    def __init__(self, *, window_s: float = 60.0, cache_s: float = 1.0, sample: int = 500) -> None:
        self.window_s = window_s
        self.cache_s = cache_s
        self.sample = sample
        self._cache: dict[str, tuple[float, float | None]] = {}
        self._measuring: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[float | None]]
        self._measuring = {}

    async def rate(self, broker: Broker, queue: str) -> float | None:
        """The queue's completion rate in jobs/s (``None``: nothing to measure it by)."""
        loop = asyncio.get_running_loop()
        cached = self._cache.get(queue)
        if cached is not None and loop.time() - cached[0] < self.cache_s:
            return cached[1]
        key = (loop, queue)
        task = self._measuring.get(key)
        if task is None:
            task = loop.create_task(self._measure(broker, queue, loop.time()))
            self._measuring[key] = task
            task.add_done_callback(lambda _: self._measuring.pop(key, None))
        return await asyncio.shield(task)

    async def _measure(self, broker: Broker, queue: str, loop_now: float) -> float | None:
        [stats] = await broker.stats([queue])
        timings = await broker.timings(queue, stats.at - self.window_s, self.sample)
        rate = completion_rate(timings, stats.at)
        if rate is None:
            workers = await broker.workers()
            rate = _capacity(stats, sum(w.concurrency for w in workers if queue in w.queues))
        self._cache[queue] = (loop_now, rate)
        return rate

    async def __call__(self, broker: Broker, queue: str, depth: int, max_depth: int) -> float:
        """``retry_after_s`` for a full queue, from its measured completion rate."""
        return retry_after_s(depth, max_depth, await self.rate(broker, queue))
