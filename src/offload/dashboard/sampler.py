"""The dashboard's memory of recent queue snapshots, for rates and charts.

Rates (λ, X, L, W) need two snapshots of the broker's cumulative counters; charts need a
history. The sampler keeps a bounded ring of snapshots, taken whenever a page or the API
asks (at most one per ``min_interval_s``) and, when the dashboard runs on its own, on a
timer. It belongs to one dashboard instance: no module state.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offload.dashboard.models import Series, SeriesLine

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers.base import QueueStats

__all__ = ["Sampler", "Snapshot"]

MAX_LINES = 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every queue's stats at one instant."""

    at: float
    queues: dict[str, QueueStats]


class Sampler:
    """A bounded history of snapshots.

    Args:
        min_interval_s: snapshots closer together than this are not kept.
        keep: how many snapshots to keep (the oldest are dropped).
    """

    def __init__(self, min_interval_s: float = 1.0, keep: int = 1800) -> None:
        self.min_interval_s = min_interval_s
        self._ring: deque[Snapshot] = deque(maxlen=keep)

    def observe(self, stats: Sequence[QueueStats]) -> Snapshot:
        """Record a snapshot unless the last one is too recent; return the current one."""
        at = max((s.at for s in stats), default=0.0)
        snap = Snapshot(at, {s.queue: s for s in stats})
        if not self._ring or at - self._ring[-1].at >= self.min_interval_s:
            self._ring.append(snap)
        return snap

    def base_for(self, now: Snapshot, window_s: float) -> Snapshot | None:
        """The oldest kept snapshot within ``window_s`` before ``now`` (at least
        ``min_interval_s`` older), or ``None`` if there is none yet."""
        for snap in self._ring:
            if now.at - snap.at <= window_s and now.at - snap.at >= self.min_interval_s:
                return snap
        return None

    def series(self, window_s: float) -> Series:
        """Throughput and depth per queue over the last ``window_s`` seconds."""
        if not self._ring:
            return Series(t=[], throughput=[], depth=[])
        newest = self._ring[-1].at
        snaps = [s for s in self._ring if newest - s.at <= window_s]
        names = _busiest(snaps[-1])
        t = [s.at for s in snaps]
        depth = [SeriesLine(label=q, values=[_pending(s, q) for s in snaps]) for q in names]
        throughput = [SeriesLine(label=q, values=[None, *_rates(snaps, q)]) for q in names]
        return Series(t=t, throughput=throughput, depth=depth)


def _busiest(snap: Snapshot) -> list[str]:
    """The queues to draw: the most active first, at most ``MAX_LINES``."""

    def activity(q: str) -> int:
        s = snap.queues[q]
        return s.counters.enqueued + s.counts.pending + s.counts.running

    return sorted(snap.queues, key=activity, reverse=True)[:MAX_LINES]


def _pending(snap: Snapshot, queue: str) -> float | None:
    s = snap.queues.get(queue)
    return None if s is None else float(s.counts.pending + s.counts.running)


def _rates(snaps: Sequence[Snapshot], queue: str) -> list[float | None]:
    out: list[float | None] = []
    for before, after in itertools.pairwise(snaps):
        a, b = before.queues.get(queue), after.queues.get(queue)
        dt = after.at - before.at
        if a is None or b is None or dt <= 0:
            out.append(None)
        else:
            out.append(max(0.0, (b.counters.finished - a.counters.finished) / dt))
    return out
