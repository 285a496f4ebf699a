"""Between protocol objects and the SQLite broker's rows: ids, tokens, records, blobs.

Pure functions, no I/O; used by the stores on the broker's database thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zlib import crc32

import msgspec

from offload.brokers.base import Delivery, ErrorRecord, JobRecord, JobState

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "NULL",
    "TOKEN_SEQ_SHIFT",
    "blob",
    "delivery_of",
    "error_json",
    "id_hash",
    "ids_json",
    "record_of",
    "seq_of",
]

#: Stands for NULL in the hottest statements, which read it back with nullif(?, 0).
#: Micro-optimization: Python 3.11's sqlite3 binds None and bytes through its slow adapter
#: lookup, ints and bytearrays directly (worth ~1.5 us per enqueued job).
NULL = 0
#: The lease token carries the job's rowid above these bits (see claim in queries.sql).
TOKEN_SEQ_SHIFT = 20

_HALF = 1 << 31
_errors_decoder = msgspec.json.Decoder(list[ErrorRecord])
_encoder = msgspec.json.Encoder()


def id_hash(job_id: str) -> int:
    """The key of ``jobs_id``: crc32 of the id as a signed 32-bit integer, which SQLite
    stores in 4 bytes. A small key keeps the index small, and so the pages a batch of
    random ids dirties; collisions (about one pair per 10,000 ids among a million) cost a
    row read, as every lookup also compares the id."""
    return crc32(job_id.encode()) - _HALF


def ids_json(ids: Sequence[str], hashes: Sequence[int] | None = None) -> str:
    """Ids as one JSON array of [id_hash, id] pairs (joined with ``json_each``: one
    statement for any number of ids); pass ``hashes`` if they are known already."""
    hs = [id_hash(i) for i in ids] if hashes is None else hashes
    return _encoder.encode(list(zip(hs, ids, strict=True))).decode()


def error_json(error: ErrorRecord | None) -> str | None:
    """An error record as the JSON object the statements append to ``errors``."""
    return None if error is None else _encoder.encode(error).decode()


def blob(value: bytes | None) -> bytearray | int:
    """A result for a ``nullif(?, 0)`` parameter (see :data:`NULL`)."""
    return NULL if value is None else bytearray(value)


def seq_of(d: Delivery) -> int:
    """The job's rowid, from its lease token."""
    return d.lease_token >> TOKEN_SEQ_SHIFT


def delivery_of(row: Sequence[Any], queue: str, expires: float) -> Delivery:
    """A Delivery from a row of the ``claim`` statement's RETURNING list."""
    return Delivery(
        job_id=row[1],
        queue=queue,
        name=row[2],
        kind=row[3],
        payload=row[4],
        attempts=row[5],
        max_attempts=row[6],
        recoveries=row[7],
        lease_token=row[8],
        lease_expires=expires,
        enqueued_at=row[9],
        priority=row[10],
        key=row[11],
    )


def record_of(r: Sequence[Any]) -> JobRecord:
    """A JobRecord from the ``get_jobs`` column list (``list_jobs`` minus its seq)."""
    return JobRecord(
        id=r[0],
        queue=r[1],
        name=r[2],
        kind=r[3],
        state=JobState(r[4]),
        payload=r[5],
        priority=r[6],
        key=r[7],
        dedupe_key=r[8],
        attempts=r[9],
        max_attempts=r[10],
        recoveries=r[11],
        enqueued_at=r[12],
        run_at=r[13],
        started_at=r[14],
        finished_at=r[15],
        result=r[16],
        errors=_errors_decoder.decode(r[17]) if r[17] else [],
        progress=r[18],
        progress_message=r[19],
        cancel_requested=bool(r[20]),
        worker_id=r[21],
        lease_expires=r[22],
    )
