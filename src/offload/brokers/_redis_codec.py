"""What travels between the Redis broker and its scripts, and back.

Requests go to Lua as one msgpack blob of tuples (Redis's cmsgpack cannot read msgpack
``bin``, so every opaque byte string travels as its own script argument and the tuple
holds its index). Replies come back as msgpack rows or flat lists of bulk strings.
"""

from __future__ import annotations

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
    from collections.abc import Sequence

__all__ = [
    "ArgPack",
    "deliveries",
    "job_record",
    "pack_settlement",
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
_decode_rows = msgspec.msgpack.Decoder(list[list[Any]]).decode
_decode_errors = msgspec.json.Decoder(list[ErrorRecord]).decode
_encode_json = msgspec.json.Encoder().encode


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
        """A request as admit() reads it: the fields without the payload, then its index."""
        t = _astuple(req)
        return (*t[:3], *t[4:], self.ref(t[3]))

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


def deliveries(
    reply: list[Any], queue: str, token_base: int, lease_expires: float
) -> list[Delivery]:
    """Deliveries from claim.lua's reply: rows, next due, then the payloads."""
    if not reply[0]:
        return []
    out = []
    payloads = reply[2:]
    for i, row in enumerate(_decode_rows(reply[0])):
        out.append(
            Delivery(
                job_id=row[0],
                queue=queue,
                name=row[1],
                kind=row[2],
                payload=payloads[i],
                attempts=row[3],
                max_attempts=row[4],
                recoveries=row[5],
                lease_token=token_base + i + 1,
                lease_expires=lease_expires,
                enqueued_at=float(row[6]),
                priority=row[7],
                key=row[8] if len(row) > 8 else None,
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
    q n k s p pr ky dk a ma rc e r st f res er pg pm cr w le sq ad du."""
    return JobRecord(
        id=job_id,
        queue=v[0].decode(),
        name=v[1].decode(),
        kind=v[2].decode(),
        state=JobState(v[3].decode()),
        payload=v[4] or b"",
        priority=int(v[5]),
        key=_s(v[6]),
        dedupe_key=_s(v[7]),
        attempts=int(v[8]),
        max_attempts=int(v[9]),
        recoveries=int(v[10]),
        enqueued_at=float(v[11]),
        run_at=float(v[12]),
        started_at=_f(v[13]),
        finished_at=_f(v[14]),
        result=v[15],
        errors=_errors(v[16]),
        progress=_f(v[17]),
        progress_message=_s(v[18]),
        cancel_requested=v[19] is not None,
        worker_id=_s(v[20]),
        lease_expires=_f(v[21]),
    )


def record_order(v: list[Any]) -> tuple[float, int]:
    """Newest-first sort key of a record's values: admitted at, then seq."""
    return (float(v[23]), int(v[22]))


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
