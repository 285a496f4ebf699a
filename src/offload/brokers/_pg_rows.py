"""Between protocol objects and the PostgreSQL broker's SQL: parameters out, rows in.

Batches travel as one array per field (the functions ``unnest`` them), which psycopg
sends without registering any type, so the same statements also run on a caller's own
connection (transactional enqueue).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from offload.brokers.base import (
    Ack,
    Bury,
    Counters,
    Delivery,
    EnqueueRequest,
    ErrorRecord,
    GroupInfo,
    JobRecord,
    JobState,
    MarkCancelled,
    QueueStats,
    Release,
    RetryLater,
    Settlement,
    StateCounts,
    TopicInfo,
    group_queue,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "delivery",
    "enqueue_params",
    "job_record",
    "queue_stats",
    "settle_params",
    "topic_info",
]

_encode_error = msgspec.json.Encoder().encode
_decode_errors = msgspec.json.Decoder(list[ErrorRecord]).decode
_STATE_FIELDS = tuple(s.value for s in JobState)
_COUNTER_FIELDS = (
    "enqueued",
    "started",
    "waited",
    "succeeded",
    "dead",
    "cancelled",
    "retried",
    "recovered",
    "wait_s",
    "service_s",
    "system_s",
    "in_system",
    "in_system_enq_s",
)


def request_arrays(requests: Sequence[EnqueueRequest]) -> list[list[Any]]:
    """The 16 field arrays of ``{schema}.enqueue``, one element per request."""
    rs = requests
    return [
        [r.id for r in rs],
        [r.queue for r in rs],
        [r.name for r in rs],
        [r.kind for r in rs],
        [r.payload for r in rs],
        [r.enqueued_at for r in rs],
        [r.priority for r in rs],
        [r.eta for r in rs],
        [r.key for r in rs],
        [r.key_limit for r in rs],
        [r.dedupe_key for r in rs],
        [r.max_attempts for r in rs],
        [r.max_recoveries for r in rs],
        [r.max_depth for r in rs],
        [r.result_ttl_s for r in rs],
        [r.dead_ttl_s for r in rs],
    ]


def enqueue_params(requests: Sequence[EnqueueRequest], now: float) -> list[Any]:
    """Arguments of the ``enqueue`` statement."""
    return [*request_arrays(requests), now]


def settle_params(settlements: Sequence[Settlement], now: float) -> list[Any]:
    """Arguments of the ``settle`` statement, or of ``settle_follow_ups`` (the settlements,
    then their follow-ups) when any settlement has follow-ups."""
    ids: list[str] = []
    tokens: list[int] = []
    kinds: list[str] = []
    results: list[bytes | None] = []
    errors: list[str | None] = []
    delays: list[float] = []
    parents: list[int] = []
    follow_ups: list[EnqueueRequest] = []
    for n, s in enumerate(settlements, 1):
        d = s.delivery
        ids.append(d.job_id)
        tokens.append(d.lease_token)
        if type(s) is Ack:  # the common case, without the general dispatch
            kinds.append("ack")
            results.append(s.result)
            errors.append(None)
            delays.append(0.0)
        else:
            kind, result, error, delay = _settlement_fields(s)
            kinds.append(kind)
            results.append(result)
            errors.append(None if error is None else _error_json(error))
            delays.append(delay)
        if isinstance(s, Ack | Bury) and s.follow_ups:
            parents.extend([n] * len(s.follow_ups))
            follow_ups.extend(s.follow_ups)
    params = [ids, tokens, kinds, results, errors, delays, now]
    if not follow_ups:
        return params
    arrays = request_arrays(follow_ups)
    del arrays[13]  # max_depth: follow-ups are never bounded
    return [*params, parents, *arrays]


def _error_json(error: ErrorRecord) -> str:
    """An error record as jsonb text. jsonb cannot hold NUL (``\\u0000``), and a message
    may quote hostile input (a task name, an argument), so NUL becomes U+FFFD."""
    text = _encode_error(error).decode()
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def _settlement_fields(s: Settlement) -> tuple[str, bytes | None, ErrorRecord | None, float]:
    if isinstance(s, Ack):
        return "ack", s.result, None, 0.0
    if isinstance(s, RetryLater):
        return "retry", None, s.error, s.delay_s
    if isinstance(s, Bury):
        return "bury", None, s.error, 0.0
    if isinstance(s, Release):
        return "release", None, None, s.delay_s
    if isinstance(s, MarkCancelled):
        return "cancel", None, s.error, 0.0
    raise TypeError(f"not a settlement: {s!r}")


def delivery(row: Sequence[Any]) -> Delivery:
    """A claimed row (the columns of ``{schema}.claim``) as a delivery."""
    return Delivery(
        job_id=row[0],
        queue=row[1],
        name=row[2],
        kind=row[3],
        payload=row[4],
        attempts=row[5],
        max_attempts=row[6],
        recoveries=row[7],
        lease_token=row[8],
        lease_expires=row[9],
        enqueued_at=row[10],
        priority=row[11],
        key=row[12],
    )


def job_record(row: Sequence[Any]) -> JobRecord:
    """A row of the ``get_jobs`` / ``list_jobs`` statements as a job record."""
    return JobRecord(
        id=row[0],
        queue=row[1],
        name=row[2],
        kind=row[3],
        state=JobState(row[4]),
        payload=row[5],
        priority=row[6],
        key=row[7],
        dedupe_key=row[8],
        attempts=row[9],
        max_attempts=row[10],
        recoveries=row[11],
        enqueued_at=row[12],
        run_at=row[13],
        started_at=row[14],
        finished_at=row[15],
        result=row[16],
        errors=_decode_errors(row[17]),
        progress=row[18],
        progress_message=row[19],
        cancel_requested=row[20],
        worker_id=row[21],
        lease_expires=row[22],
    )


def queue_stats(queue: str, rows: Sequence[Sequence[Any]], at: float) -> QueueStats:
    """One queue's stats from its rows of the ``stats`` statement."""
    counts = StateCounts()
    by_task: dict[str, Counters] = {}
    oldest = None
    for row in rows:
        if row[1] is None:
            oldest = row[-1]
            continue
        for field, value in zip(_STATE_FIELDS, row[2:10], strict=True):
            setattr(counts, field, getattr(counts, field) + value)
        by_task[row[1]] = Counters(**dict(zip(_COUNTER_FIELDS, row[10:23], strict=True)))
    total = sum(by_task.values(), Counters())
    return QueueStats(
        queue=queue,
        at=at,
        counts=counts,
        counters=total,
        by_task=by_task,
        oldest_pending_at=oldest,
    )


def topic_info(row: Sequence[Any]) -> TopicInfo:
    """A row of the ``topics`` statement as a topic's info."""
    name, retention_s, max_events, first, last, retained, groups, created, from_start = row
    return TopicInfo(
        name=name,
        first_offset=first,
        last_offset=last,
        retained=retained,
        groups=[
            GroupInfo(group=g, queue=group_queue(name, g), created_at=c, from_start=f)
            for g, c, f in zip(groups, created, from_start, strict=True)
        ],
        retention_s=retention_s,
        max_events=max_events,
    )
