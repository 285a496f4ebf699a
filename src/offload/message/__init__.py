"""The wire format: one versioned envelope, and the codecs that turn it into bytes."""

from offload.message.codecs import Codec, JsonCodec, MsgpackCodec, get_codec
from offload.message.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    decode_envelope,
    encode_envelope,
)

__all__ = [
    "ENVELOPE_VERSION",
    "Codec",
    "Envelope",
    "JsonCodec",
    "MsgpackCodec",
    "decode_envelope",
    "encode_envelope",
    "get_codec",
]
