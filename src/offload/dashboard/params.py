"""Typed, range-checked request parameters: the only way UI input reaches the broker.

Every numeric parameter has bounds; names are checked against the characters offload
allows and, where the set is known (queues, states), against that set; ids and cursors
have a length cap and a character whitelist. Nothing here builds a query or a pattern:
the values go to the broker as typed, exact-match filters.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from offload.brokers.base import JobState

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from starlette.datastructures import QueryParams

__all__ = [
    "MAX_IDS",
    "BadParam",
    "cursor",
    "ids",
    "integer",
    "job_id",
    "known_name",
    "name",
    "state",
]

MAX_IDS = 500
_NAME = re.compile(r"[A-Za-z0-9_.:\-@~]{1,200}")
_JOB_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
_CURSOR = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")


class BadParam(ValueError):
    """A request parameter is missing, malformed or out of range (HTTP 400)."""


def _one(query: QueryParams | Mapping[str, str], key: str) -> str | None:
    if hasattr(query, "getlist"):
        values = query.getlist(key)
        if len(values) > 1:
            raise BadParam(f"{key!r} given {len(values)} times")
        value = values[0] if values else None
    else:
        value = query.get(key)
    return value if value not in (None, "") else None


def integer(query: QueryParams, key: str, default: int, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` (``default`` when absent)."""
    raw = _one(query, key)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,12}", raw):
        raise BadParam(f"{key!r} must be an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadParam(f"{key!r} must be between {lo} and {hi}")
    return value


def name(query: QueryParams, key: str) -> str | None:
    """A queue, task or topic name (offload's name characters, 1..200), or ``None``."""
    raw = _one(query, key)
    if raw is not None and not _NAME.fullmatch(raw):
        raise BadParam(f"{key!r} is not a valid name")
    return raw


def known_name(query: QueryParams, key: str, known: Collection[str]) -> str | None:
    """A name that must be one of ``known`` (e.g. the broker's queues), or ``None``."""
    value = name(query, key)
    if value is not None and value not in known:
        raise BadParam(f"unknown {key} {value!r}")
    return value


def state(query: QueryParams, key: str = "state") -> JobState | None:
    """A job state by its value, or ``None``."""
    raw = _one(query, key)
    if raw is None:
        return None
    try:
        return JobState(raw)
    except ValueError:
        raise BadParam(f"{key!r} must be one of {', '.join(s.value for s in JobState)}") from None


def job_id(value: str) -> str:
    """A job id as given in a path or form: printable ASCII, 1..200 characters."""
    if not _JOB_ID.fullmatch(value):
        raise BadParam("not a valid job id")
    return value


def cursor(query: QueryParams) -> str | None:
    """A listing cursor, as a previous page returned it."""
    raw = _one(query, "cursor")
    if raw is not None and not _CURSOR.fullmatch(raw):
        raise BadParam("not a valid cursor")
    return raw


def ids(values: Sequence[str]) -> list[str]:
    """Job ids from a form or JSON body: 1..MAX_IDS valid ids, duplicates dropped."""
    if not values:
        raise BadParam("select at least one job")
    if len(values) > MAX_IDS:
        raise BadParam(f"at most {MAX_IDS} jobs at once")
    return list(dict.fromkeys(job_id(v) for v in values))
