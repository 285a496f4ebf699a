"""Topics on SQLite: a retained log per topic, fanned out as one job per subscriber group.

``publish`` appends to ``events`` and enqueues the group deliveries in the same
transaction, so an event is either logged and delivered to every group, or neither.
Runs on the broker's database thread inside :meth:`Database.write`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from offload.brokers.base import EnqueueRequest, GroupInfo, TopicInfo, TopicSpec, group_queue

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers._sqlite_store import JobStore
    from offload.brokers._sqlite_tally import Tally
    from offload.brokers.base import EventRequest, GroupSpec

__all__ = ["TopicStore"]

_DEFAULT_RETENTION_S = TopicSpec(name="").retention_s
_group_keys_decoder = msgspec.json.Decoder(dict[str, str])


def _keys_json(group_keys: dict[str, str]) -> str | None:
    return msgspec.json.encode(group_keys).decode() if group_keys else None


class TopicStore:
    """Topic operations; deliveries go through the :class:`JobStore`'s enqueue."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.con = jobs.con
        self.q = jobs.q

    def ensure(
        self, tally: Tally, now: float, topic: TopicSpec, groups: Sequence[GroupSpec]
    ) -> None:
        """Create or update a topic and its groups; a new ``from_start`` group gets the log."""
        self.con.execute(self.q.topic_upsert, (topic.name, topic.retention_s, topic.max_events))
        for g in groups:
            known = self.con.execute(self.q.group_get, (topic.name, g.group)).fetchone()
            self.con.execute(
                self.q.group_upsert,
                (
                    topic.name,
                    g.group,
                    int(g.from_start),
                    g.max_attempts,
                    g.max_recoveries,
                    g.result_ttl_s,
                    g.dead_ttl_s,
                    now,
                ),
            )
            if known is None and g.from_start:
                group = self.con.execute(self.q.group_get, (topic.name, g.group)).fetchone()
                events = self.con.execute(self.q.events_from, (topic.name, 0, None)).fetchall()
                reqs = [_delivery(topic.name, group, e, now, ":s") for e in events]
                self.jobs.enqueue(tally, now, reqs, bounded=False)

    def publish(
        self, tally: Tally, now: float, topic: str, events: Sequence[EventRequest]
    ) -> list[int]:
        """Append events and enqueue one delivery per group; returns their offsets."""
        row = self.con.execute(self.q.topic_get, (topic,)).fetchone()
        if row is None:
            self.con.execute(self.q.topic_create, (topic, _DEFAULT_RETENTION_S))
        first = 0 if row is None else row[2]
        groups = self.con.execute(self.q.group_list, (topic,)).fetchall()
        offsets = list(range(first, first + len(events)))
        logged = [
            (pos, e.id, e.published_at, e.key, _keys_json(e.group_keys), e.payload)
            for pos, e in zip(offsets, events, strict=True)
        ]
        self.jobs.cur.executemany(self.q.event_insert, [(topic, *e) for e in logged])
        self.con.execute(self.q.topic_advance, (topic, first + len(events)))
        reqs = [_delivery(topic, g, e, e[2], "") for e in logged for g in groups]
        self.jobs.enqueue(tally, now, reqs, bounded=False)
        return offsets

    def replay(
        self,
        tally: Tally,
        now: float,
        topic: str,
        group: str,
        from_offset: int | None,
        from_time: float | None,
    ) -> int:
        """Deliver the retained events from an offset or a time to ``group`` again."""
        g = self.con.execute(self.q.group_get, (topic, group)).fetchone()
        if g is None:
            return 0
        n = self.con.execute(self.q.topic_replayed, (topic,)).fetchone()[0]
        events = self.con.execute(
            self.q.events_from, (topic, from_offset or 0, from_time)
        ).fetchall()
        self.jobs.enqueue(
            tally, now, [_delivery(topic, g, e, now, f":r{n}") for e in events], bounded=False
        )
        return len(events)

    def topics(self) -> list[TopicInfo]:
        """Every topic with its retained range and groups."""
        out = []
        for name, retention_s, max_events, first, last in self.con.execute(
            self.q.topics_all
        ).fetchall():
            groups = [
                GroupInfo(
                    group=g[0],
                    queue=group_queue(name, g[0]),
                    created_at=g[6],
                    from_start=bool(g[1]),
                )
                for g in self.con.execute(self.q.group_list, (name,)).fetchall()
            ]
            out.append(
                TopicInfo(
                    name=name,
                    first_offset=first,
                    last_offset=last,
                    retained=0 if first is None else last - first + 1,
                    groups=groups,
                    retention_s=retention_s,
                    max_events=max_events,
                )
            )
        return out

    def trim(self, now: float) -> int:
        """Drop events beyond each topic's count limit or older than its retention."""
        n = 0
        for name, retention_s, max_events, _first, _last in self.con.execute(
            self.q.topics_all
        ).fetchall():
            if max_events is not None:
                n += self.con.execute(self.q.trim_events_by_count, (name, max_events)).rowcount
            if retention_s is not None:
                cutoff = now - retention_s
                n += self.con.execute(self.q.trim_events_by_age, (name, cutoff)).rowcount
        return n


def _delivery(
    topic: str, g: Sequence[Any], event: Sequence[Any], enqueued_at: float, suffix: str
) -> EnqueueRequest:
    """The job delivering one logged event to group ``g``.

    ``event`` is (pos, id, published_at, key, group_keys JSON, payload); the group's own
    key, if the event names one, replaces the event's key.
    """
    grp, _from_start, max_attempts, max_recoveries, result_ttl_s, dead_ttl_s, _created = g
    _pos, event_id, _published_at, key, group_keys, payload = event
    if group_keys is not None:
        key = _group_keys_decoder.decode(group_keys).get(grp, key)
    return EnqueueRequest(
        id=f"{event_id}:{grp}{suffix}",
        queue=group_queue(topic, grp),
        name=topic,
        kind="event",
        payload=payload,
        enqueued_at=enqueued_at,
        key=key,
        max_attempts=max_attempts,
        max_recoveries=max_recoveries,
        result_ttl_s=result_ttl_s,
        dead_ttl_s=dead_ttl_s,
    )
