"""Codecs: JSON (the default, readable from any language) and msgpack (smaller, faster).

Pickle is deliberately absent: a payload must never be able to run code in a worker.
A worker reads either codec whatever the producer chose; the first byte tells them
apart (a JSON envelope starts with ``{``, a msgpack one with a map marker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from offload.errors import ConfigurationError

if TYPE_CHECKING:
    from offload.message.envelope import Envelope

__all__ = ["Codec", "JsonCodec", "MsgpackCodec", "codec_for_payload", "get_codec"]

T = TypeVar("T")


class Codec(Protocol):
    """Turns envelopes, results and events into bytes and back."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Encode a value; raises ``TypeError`` for unsupported types."""

    def decode(self, data: bytes) -> Any:
        """Decode bytes into plain values (dicts, lists, strings, numbers)."""

    def decode_envelope(self, data: bytes) -> Envelope:
        """Decode bytes into an :class:`Envelope`, validating its fields."""


class _MsgspecCodec:
    """A codec over one of msgspec's formats, with its encoder and decoders built once."""

    name: str
    _format: Any  # msgspec.json or msgspec.msgpack

    def __init__(self) -> None:
        from offload.message.envelope import Envelope

        self._encoder = self._format.Encoder()
        self._decoder = self._format.Decoder()
        self._envelope_decoder = self._format.Decoder(Envelope)

    def encode(self, value: Any) -> bytes:
        data: bytes = self._encoder.encode(value)
        return data

    def decode(self, data: bytes) -> Any:
        return self._decoder.decode(data)

    def decode_envelope(self, data: bytes) -> Envelope:
        envelope: Envelope = self._envelope_decoder.decode(data)
        return envelope


class JsonCodec(_MsgspecCodec):
    """JSON through msgspec: datetimes as ISO 8601, bytes as base64, Structs as objects."""

    name = "json"
    _format = msgspec.json


class MsgpackCodec(_MsgspecCodec):
    """MessagePack through msgspec: compact and fast; not human-readable."""

    name = "msgpack"
    _format = msgspec.msgpack


_CODECS: dict[str, Codec] = {}


def get_codec(name: str) -> Codec:
    """The codec called ``name`` (``json`` or ``msgpack``), built once per process."""
    codec = _CODECS.get(name)
    if codec is None:
        if name == "json":
            codec = JsonCodec()
        elif name == "msgpack":
            codec = MsgpackCodec()
        else:
            raise ConfigurationError(
                f"Unknown codec {name!r}: choose 'json' (default) or 'msgpack'."
            )
        _CODECS[name] = codec
    return codec


def codec_for_payload(payload: bytes) -> Codec:
    """The codec that wrote ``payload``, told by its first byte."""
    if not payload:
        raise ValueError("empty payload")
    first = payload[0]
    if first in (0x7B, 0x20, 0x0A, 0x0D, 0x09):  # "{" or JSON whitespace
        return get_codec("json")
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):  # msgpack map
        return get_codec("msgpack")
    raise ValueError(f"not an envelope: starts with byte 0x{first:02x}")
