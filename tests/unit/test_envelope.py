"""The wire format: encoding, decoding, limits, forward compatibility."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
import pytest

from offload.errors import DecodeError, PayloadTooLarge, SerializationError
from offload.message import Envelope, decode_envelope, encode_envelope, get_codec


def env(**kw: object) -> Envelope:
    base: dict[str, object] = {"id": "j1", "name": "t.add", "args": [1, 2], "enqueued_at": 1.0}
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_roundtrip_with_either_codec(codec: str) -> None:
    original = env(kwargs={"when": "x"}, headers={"traceparent": "00-abc"}, key="k", priority=3)
    data = encode_envelope(original, get_codec(codec), max_size=None)
    assert decode_envelope(data) == original


def test_json_envelope_is_readable_and_omits_defaults() -> None:
    data = encode_envelope(env(), get_codec("json"), None)
    assert msgspec.json.decode(data) == {
        "id": "j1",
        "name": "t.add",
        "args": [1, 2],
        "enqueued_at": 1.0,
    }


def test_an_envelope_written_by_hand_in_another_language_decodes() -> None:
    raw = (
        b'{"v":1,"id":"from-go","name":"emails.send","queue":"emails","args":["a@x"],'
        b'"kwargs":{},"max_attempts":3,"enqueued_at":1800000000.5,"some_future_field":true}'
    )
    e = decode_envelope(raw)
    assert (e.id, e.name, e.queue, e.args, e.max_attempts) == (
        "from-go",
        "emails.send",
        "emails",
        ["a@x"],
        3,
    )


def test_rich_argument_types_encode() -> None:
    value = env(args=[dt.datetime(2026, 11, 27, 12, 0), uuid.UUID(int=7), {1, 2}])
    data = encode_envelope(value, get_codec("json"), None)
    assert decode_envelope(data).args[0] == "2026-11-27T12:00:00"


def test_unencodable_argument_is_named() -> None:
    with pytest.raises(SerializationError, match=r"argument 'callback' of 't\.add' \(function\)"):
        encode_envelope(env(kwargs={"callback": lambda: 1}), get_codec("json"), None)


def test_size_limit() -> None:
    with pytest.raises(PayloadTooLarge) as exc:
        encode_envelope(env(args=["x" * 2000]), get_codec("json"), max_size=1000)
    assert exc.value.limit == 1000 and exc.value.size > 2000
    assert "Store large data elsewhere" in str(exc.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty payload"),
        (b"\x00\x01\x02", "starts with byte 0x00"),
        (b"{not json", "Undecodable envelope"),
        (b'{"id": 5, "name": "x"}', "Undecodable envelope"),
        (b'{"v": 2, "id": "a", "name": "x"}', "version 2 is not supported"),
        (b'{"id": "a", "name": ""}', "name must be"),
        (b"\x81\xa1v\x01", "Undecodable envelope"),
    ],
)
def test_garbage_raises_decode_error_only(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_envelope(payload)


def test_a_payload_stored_as_text_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="stored as str, not bytes"):
        decode_envelope('{"id": "a", "name": "x"}')  # type: ignore[arg-type]
