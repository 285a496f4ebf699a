"""Middleware: hooks around a job's life, where tracing and metrics plug in.

Subclass :class:`Middleware`, override what you need, and pass instances to
``App(middleware=[...])``. Hooks run in order of registration (``around_execute`` nests:
the first registered is the outermost). With no middleware the worker's hot path pays
nothing for this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offload.context import JobContext
    from offload.message.envelope import Envelope

__all__ = ["Middleware", "run_around"]

CallNext = Callable[[], Awaitable[Any]]


class Middleware:
    """Hooks around enqueue, publish, execution and settlement. Every hook is optional."""

    def on_enqueue(self, envelope: Envelope) -> None:
        """Called in the producer before a job is encoded (may add ``headers``)."""

    def on_publish(self, envelope: Envelope) -> None:
        """Called in the producer before an event is encoded (may add ``headers``)."""

    async def around_execute(self, ctx: JobContext, call_next: CallNext) -> Any:
        """Wraps one attempt in the worker; must return ``await call_next()`` (or raise)."""
        return await call_next()

    def on_outcome(self, ctx: JobContext, outcome: str, duration_s: float) -> None:
        """Called in the worker after an attempt: ``succeeded``, ``retrying``, ``dead``,
        ``cancelled`` or ``released``."""


async def run_around(middleware: Sequence[Middleware], ctx: JobContext, call: CallNext) -> Any:
    """Run ``call`` inside every middleware's ``around_execute``, outermost first."""
    wrapped = call
    for mw in reversed(middleware):
        wrapped = _bind(mw, ctx, wrapped)
    return await wrapped()


def _bind(mw: Middleware, ctx: JobContext, call_next: CallNext) -> CallNext:
    async def step() -> Any:
        return await mw.around_execute(ctx, call_next)

    return step
