"""The one-line notice shown after an action (from a fixed vocabulary, never echoed input)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request


__all__ = ["done_notice", "done_param"]

_DONE = re.compile(r"(requeue|delete|cancel):(\d{1,6})")
_WORDS = {"requeue": "Requeued", "delete": "Deleted", "cancel": "Cancelled"}


def done_param(action: str, changed: int) -> str:
    """The ``done`` query value that reports an action on the next page."""
    return f"{action}:{changed}"


def done_notice(request: Request) -> str | None:
    """``Requeued 3 job(s).`` from a ``done`` parameter, if it is well formed."""
    match = _DONE.fullmatch(request.query_params.get("done", ""))
    if match is None:
        return None
    return f"{_WORDS[match[1]]} {int(match[2])} job(s)."
