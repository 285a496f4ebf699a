"""What travels between the Redis broker and its scripts, and back.

Requests go to Lua as one msgpack blob of tuples (Redis's cmsgpack cannot read msgpack
``bin``, so every opaque byte string travels as its own script argument and the tuple
holds its index). The hot paths send their rows as a msgpack *sequence* (``sequence``):
the rows' values one after another, read a row at a time with
``cmsgpack.unpack_limit(blob, width, offset)``, which builds no Lua table per row (a
decoded array costs several times more). Replies come back as msgpack rows or flat lists
of bulk strings.
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any

import msgspec

from offload.brokers.base import (
    Ack,
    Bury,
    Delivery,
    EnqueueRequest,
    ErrorRecord,
    JobRecord,
    JobState,
    MarkCancelled,
    Release,
    RetryLater,
    Settlement,
    Timing,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "ArgPack",
    "deliveries",
    "job_record",
    "pack_settlement",
    "sequence",
    "timings",
]

_REQUEST_FIELDS = (
    "id",
    "queue",
    "name",
    "payload",
    "enqueued_at",
    "kind",
    "priority",
    "eta",
    "key",
    "key_limit",
    "dedupe_key",
    "max_attempts",
    "max_recoveries",
    "max_depth",
    "result_ttl_s",
    "dead_ttl_s",
)
# admit() in lib.lua reads requests by position; a new field in base.py must be added
# there too, so fail at import rather than store jobs wrongly.
if EnqueueRequest.__struct_fields__ != _REQUEST_FIELDS:  # pragma: no cover
    raise ImportError("EnqueueRequest changed: update _redis_codec.py and lib.lua admit()")

_astuple = msgspec.structs.astuple
_encode = msgspec.msgpack.Encoder().encode
_decode_any = msgspec.msgpack.Decoder().decode
_decode_errors = msgspec.json.Decoder(list[ErrorRecord]).decode
_encode_json = msgspec.json.Encoder().encode


#: Bytes of a msgpack array's header, by its first byte (fixarray, array 16, array 32).
_ARRAY_HEADER = {**dict.fromkeys(range(0x90, 0xA0), 1), 0xDC: 3, 0xDD: 5}


def sequence(rows: Iterable[Sequence[Any]]) -> bytes:
    """The rows' values as one msgpack sequence: every row must have the width the
    script reads it with."""
    blob = _encode(list(chain.from_iterable(rows)))
    return blob[_ARRAY_HEADER[blob[0]] :]


class ArgPack:
    """Script arguments: fixed ones first, then opaque blobs referenced by index."""

    __slots__ = ("args",)

    def __init__(self, *fixed: Any) -> None:
        self.args: list[Any] = list(fixed)

    def ref(self, blob: bytes) -> int:
        """Append a blob; its ARGV index (1-based, as Lua sees it)."""
        self.args.append(blob)
        return len(self.args)

    def request(self, req: EnqueueRequest) -> tuple[Any, ...]:
        """A request as admit() in lib.lua reads it, with its m (the job's immutable
        fields, in the order of M in lib.lua) and payload appended as blobs."""
        (id_, queue, name, payload, enq, kind, prio, eta, key, kl, dk, ma, mr, depth, rt, dt) = (
            _astuple(req)
        )
        run_at = enq if eta is None else eta
        kl = max(1, kl)
        meta = (name, kind, prio, key, kl, dk, ma, mr, rt, dt, enq, run_at, max(run_at, enq), queue)
        m = self.ref(_encode(meta))
        return (id_, queue, name, enq, prio, run_at, key, kl, dk, depth, m, self.ref(payload))

    def encode(self, value: Any) -> bytes:
        return _encode(value)


def pack_settlement(pack: ArgPack, s: Settlement) -> tuple[Any, ...]:
    """One settlement as settle.lua reads it."""
    d = s.delivery
    head = (d.job_id, d.queue, str(d.lease_token))
    if isinstance(s, Ack):
        blob = 0 if s.result is None else pack.ref(s.result)
        return ("a", *head, 0, blob, [pack.request(r) for r in s.follow_ups])
    if isinstance(s, RetryLater):
        return ("r", *head, s.delay_s, pack.ref(_encode_json(s.error)), ())
    if isinstance(s, Bury):
        follow = [pack.request(r) for r in s.follow_ups]
        return ("b", *head, 0, pack.ref(_encode_json(s.error)), follow)
    if isinstance(s, Release):
        return ("l", *head, s.delay_s, 0, ())
    if isinstance(s, MarkCancelled):
        blob = 0 if s.error is None else pack.ref(_encode_json(s.error))
        return ("c", *head, 0, blob, ())
    raise TypeError(f"not a settlement: {s!r}")


def meta(blob: bytes) -> list[Any]:
    """A job's m field: name, kind, priority, key, key_limit, dedupe_key, max_attempts,
    max_recoveries, result_ttl_s, dead_ttl_s, enqueued_at, run_at, due_at, queue."""
    m = _decode_any(blob)
    if isinstance(m, dict):  # written by Lua with a nil inside: cmsgpack made it a map
        return [m.get(i) for i in range(1, 15)]
    return m  # type: ignore[no-any-return]


def deliveries(
    reply: list[Any], queue: str, token_base: int, lease_expires: float
) -> list[Delivery]:
    """Deliveries from claim.lua's reply: next due, then id, m, payload, attempts,
    recoveries per job."""
    out: list[Delivery] = []
    for i in range(1, len(reply), 5):
        m = meta(reply[i + 1])
        out.append(
            Delivery(
                job_id=reply[i].decode(),
                queue=queue,
                name=m[0],
                kind=m[1],
                payload=reply[i + 2],
                attempts=reply[i + 3],
                max_attempts=m[6],
                recoveries=reply[i + 4],
                lease_token=token_base + len(out) + 1,
                lease_expires=lease_expires,
                enqueued_at=float(m[10]),
                priority=m[2],
                key=m[3],
            )
        )
    return out


def _f(v: bytes | None) -> float | None:
    return None if v is None else float(v)


def _s(v: bytes | None) -> str | None:
    return None if v is None else v.decode()


def _errors(v: bytes | None) -> list[ErrorRecord]:
    if not v:
        return []
    return _decode_errors(b"[" + v.replace(b"\n", b",") + b"]")


def job_record(job_id: str, v: list[Any]) -> JobRecord:
    """A record from the values of RECORD (lib.lua), in that order:
    m s p a rc r st f res er pg pm cr w le sq."""
    m = meta(v[0])
    state = JobState(v[1].decode())
    return JobRecord(
        id=job_id,
        queue=m[13],
        name=m[0],
        kind=m[1],
        state=state,
        payload=v[2] or b"",
        priority=m[2],
        key=m[3],
        dedupe_key=m[5],
        attempts=int(v[3] or 0),
        max_attempts=m[6],
        recoveries=int(v[4] or 0),
        enqueued_at=float(m[10]),
        run_at=float(v[5] or m[11]),
        started_at=_f(v[6]),
        finished_at=_f(v[7]),
        result=v[8],
        errors=_errors(v[9]),
        progress=_f(v[10]),
        progress_message=_s(v[11]),
        cancel_requested=v[12] is not None,
        worker_id=_s(v[13]),
        lease_expires=_f(v[14]) if state is JobState.RUNNING else None,
    )


def record_order(v: list[Any]) -> tuple[float, int]:
    """Newest-first sort key of a record's values: enqueued at, then seq."""
    return (float(meta(v[0])[10]), int(v[15]))


def timings(flat: Sequence[bytes]) -> list[Timing]:
    """Timings from timings.lua's flat reply."""
    return [
        Timing(
            flat[i].decode(),
            JobState(flat[i + 1].decode()),
            float(flat[i + 2]),
            float(flat[i + 3]),
            float(flat[i + 4]),
            float(flat[i + 5]),
        )
        for i in range(0, len(flat), 6)
    ]
