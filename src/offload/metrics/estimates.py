"""Quick estimates from one stats snapshot, for decisions made at enqueue time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.brokers.base import QueueStats

__all__ = ["retry_after"]

MIN_RETRY_AFTER_S = 0.1
MAX_RETRY_AFTER_S = 300.0


def retry_after(stats: QueueStats, slots: int, max_depth: int) -> float:
    """Seconds until a full queue has drained a tenth of its bound.

    The completion rate is estimated as ``slots / mean service time`` (every slot busy, as
    it is when the queue is full); with no measurements yet it falls back to one second
    per tenth of the bound. Clamped to [0.1 s, 300 s].
    """
    c = stats.counters
    attempts_done = c.succeeded + c.dead + c.cancelled + c.retried
    if slots > 0 and attempts_done > 0 and c.service_s > 0:
        rate = slots / (c.service_s / attempts_done)
        seconds = max(1.0, max_depth / 10) / rate
    else:
        seconds = 1.0
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, seconds))
