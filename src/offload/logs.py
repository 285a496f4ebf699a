"""Log set-up for the command line: readable text by default, JSON lines by flag.

Every log record offload writes about a job carries ``extra`` fields (``action``,
``job_id``, ``task``, ``attempt``, ...). The text format appends them as ``key=value``;
the JSON format writes one object per line with them as top-level fields, ready for a
log pipeline.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import msgspec

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts, level, logger, message`` plus the extra fields."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        try:
            return self._encoder.encode(doc).decode()
        except TypeError:
            return self._encoder.encode({k: str(v) for k, v in doc.items()}).decode()


def setup_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Send offload's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
