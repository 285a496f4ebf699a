"""The envelope: what a job or an event is on the wire.

One msgspec Struct, versioned by ``v``. JSON by default, so a producer in any language can
enqueue (``docs/wire-format.md`` documents every field). Unknown fields are ignored when
decoding, so adding a field with a default is a compatible change; anything else bumps
``v``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from offload.errors import DecodeError, PayloadTooLarge, SerializationError
from offload.message.codecs import Codec, codec_for_payload

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_NAME_LENGTH",
    "Envelope",
    "Signature",
    "decode_envelope",
    "encode_envelope",
]

ENVELOPE_VERSION = 1
MAX_NAME_LENGTH = 200


class Signature(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A task call written down to be made later (a workflow step or a callback)."""

    name: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One job or event.

    Attributes:
        v: envelope format version.
        id: unique job id (a UUID unless the producer chose one).
        kind: ``job`` for a task call, ``event`` for a published event.
        name: the task name, or the topic of an event.
        queue: the queue the job was sent to.
        args: positional arguments; for an event, ``[body]``.
        kwargs: keyword arguments.
        key: ordering / concurrency key.
        dedupe_key: while an unfinished job holds it, enqueues with it are duplicates.
        priority: higher runs first within a queue.
        eta: Unix time before which the job must not start.
        attempts: attempts made before this envelope was written (0 at enqueue).
        max_attempts: 1 + retries.
        timeout_s: per-attempt time limit.
        enqueued_at: Unix time of the enqueue.
        headers: string metadata: trace context (``traceparent``), user values.
        chain: workflow stages to run after this one succeeds, the next receiving this
            result first (a group stage is a signature named ``offload:group``). For a
            chord member: the stages after the chord, started once all members are done.
        on_success: callbacks enqueued with the result when the job succeeds.
        on_failure: callbacks enqueued with the job id when the job dies.
        chord: the chord this job is a member of (the callback fires when all are done).
        chord_size: how many members that chord has (their ids are ``<chord>.<n>``).
    """

    v: int = ENVELOPE_VERSION
    id: str
    kind: Literal["job", "event"] = "job"
    name: str
    queue: str = "default"
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    key: str | None = None
    dedupe_key: str | None = None
    priority: int = 0
    eta: float | None = None
    attempts: int = 0
    max_attempts: int = 1
    timeout_s: float | None = None
    enqueued_at: float = 0.0
    headers: dict[str, str] = {}
    chain: list[Signature] = []
    on_success: list[Signature] = []
    on_failure: list[Signature] = []
    chord: str | None = None
    chord_size: int = 0


def encode_envelope(envelope: Envelope, codec: Codec, max_size: int | None) -> bytes:
    """Encode an envelope, naming the argument at fault if one cannot be encoded.

    Raises:
        SerializationError: an argument is not encodable by ``codec``.
        PayloadTooLarge: the bytes are over ``max_size``.
    """
    try:
        data = codec.encode(envelope)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(_which_argument(envelope, codec, exc)) from exc
    if max_size is not None and len(data) > max_size:
        raise PayloadTooLarge(len(data), max_size, envelope.name)
    return data


def _which_argument(envelope: Envelope, codec: Codec, exc: Exception) -> str:
    named: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(envelope.args)]
    named += [(f"argument {k!r}", v) for k, v in envelope.kwargs.items()]
    for label, value in named:
        try:
            codec.encode(value)
        except (TypeError, ValueError, OverflowError) as inner:
            return (
                f"Cannot encode {label} of {envelope.name!r} ({type(value).__name__}) with the "
                f"{codec.name} codec: {inner}. Pass JSON-compatible values, msgspec Structs, "
                "dataclasses, datetimes or UUIDs."
            )
    return f"Cannot encode the job for {envelope.name!r} with the {codec.name} codec: {exc}"


def decode_envelope(payload: bytes) -> Envelope:
    """Decode bytes written by any offload codec.

    Raises:
        DecodeError: the bytes are not a valid envelope of a version this code reads.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise DecodeError(
            f"Undecodable envelope: stored as {type(payload).__name__}, not bytes "
            "(was it written to the broker by hand as text?)"
        )
    try:
        codec = codec_for_payload(bytes(payload))
        envelope = codec.decode_envelope(payload)
    # RecursionError: msgspec refuses nesting past the interpreter's limit that way.
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
        preview = bytes(payload[:60])
        raise DecodeError(f"Undecodable envelope ({exc}); first bytes: {preview!r}") from exc
    if envelope.v != ENVELOPE_VERSION:
        raise DecodeError(
            f"Envelope version {envelope.v} is not supported by this offload "
            f"(reads version {ENVELOPE_VERSION}); upgrade the worker."
        )
    if not envelope.name or len(envelope.name) > MAX_NAME_LENGTH:
        raise DecodeError(f"Envelope name must be 1..{MAX_NAME_LENGTH} characters long.")
    return envelope
