"""Subscriber groups as their operators see them: how far behind, and replay.

A topic is a retained, append-only log. Publishing appends the event and, in the same
atomic step, gives every subscriber group its own delivery (an ordinary job in the
group's queue ``group@topic``). So a group is "behind" by exactly its pending
deliveries, and each group retries, dead-letters and catches up on its own, without
holding back the others.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

import msgspec

from offload.errors import ConfigurationError

if TYPE_CHECKING:
    from offload.brokers import Broker

__all__ = ["GroupLag", "group_lag", "parse_from"]


class GroupLag(msgspec.Struct, kw_only=True):
    """How far one subscriber group is behind its topic.

    Attributes:
        topic, group: which group.
        queue: the queue holding its deliveries.
        behind: events delivered to the group and not yet handled (pending).
        running: events being handled now.
        oldest_age_s: age of the oldest unhandled event, or ``None`` when caught up.
        dead: events the group gave up on (in the dead letters).
        handled: events handled successfully (still retained as job records).
    """

    topic: str
    group: str
    queue: str
    behind: int
    running: int
    oldest_age_s: float | None
    dead: int
    handled: int


async def group_lag(broker: Broker, topics: list[str] | None = None) -> list[GroupLag]:
    """The lag of every group (of ``topics``, or of every topic)."""
    infos = [t for t in await broker.topics() if topics is None or t.name in topics]
    queues = [(t.name, g.group, g.queue) for t in infos for g in t.groups]
    if not queues:
        return []
    stats = {s.queue: s for s in await broker.stats([q for _, _, q in queues])}
    out = []
    for topic, group, queue in queues:
        s = stats[queue]
        age = None if s.oldest_pending_at is None else max(0.0, s.at - s.oldest_pending_at)
        out.append(
            GroupLag(
                topic=topic,
                group=group,
                queue=queue,
                behind=s.counts.pending,
                running=s.counts.running,
                oldest_age_s=age,
                dead=s.counts.dead,
                handled=s.counts.succeeded,
            )
        )
    return out


_AGO = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_from(text: str, now: float) -> tuple[int | None, float | None]:
    """Read a replay start: an offset (``1200``), a duration ago (``90m``, ``2h``, ``7d``)
    or a time (``2026-11-27T10:00:00`` in ISO 8601, local time unless it has a zone).

    Returns ``(offset, None)`` or ``(None, unix_time)``.
    """
    text = text.strip()
    if text.isdigit():
        return int(text), None
    m = _AGO.match(text)
    if m:
        return None, now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"Cannot read --from {text!r}: give an offset (1200), a duration ago (90m, 2h, 7d) "
            "or an ISO time (2026-11-27T10:00:00)."
        ) from None
    return None, when.timestamp()
