"""The running job, as seen from inside a task: ids, attempt, progress.

The only context variable in offload: it holds the delivery a task is running for, and is
set by the worker around each run (in the task's own asyncio task, thread or process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["JobContext", "current_job", "progress", "progress_sync"]

ProgressSink = Callable[[str, float, "str | None"], None]


@dataclass(slots=True)
class JobContext:
    """What a task may know about the job it runs.

    Attributes:
        id: the job id.
        name: the task name (or the topic, for an event).
        queue: the queue it came from.
        attempt: 1 for the first run, 2 for the first retry, ...
        max_attempts: the attempts it may use.
        enqueued_at: Unix time of the enqueue.
        headers: the envelope headers (trace context, user metadata).
        key: the job's ordering key, if any.
    """

    id: str
    name: str
    queue: str
    attempt: int
    max_attempts: int
    enqueued_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None
    _sink: ProgressSink | None = None
    _cancelled: threading.Event | None = None  # made on the first cancel request

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now sends the job to the dead letters."""
        return self.attempt >= self.max_attempts

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this job (sync tasks should check it)."""
        return self._cancelled is not None and self._cancelled.is_set()

    def request_cancel(self) -> None:
        """Mark the job as asked to cancel (worker use; thread-safe)."""
        if self._cancelled is None:
            self._cancelled = threading.Event()
        self._cancelled.set()

    def report(self, value: float, message: str | None = None) -> None:
        """Record progress (0.0 to 1.0); cheap and thread-safe, written in batches."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"progress must be between 0.0 and 1.0, got {value}")
        if self._sink is not None:
            self._sink(self.id, value, message)


_current: ContextVar[JobContext | None] = ContextVar("offload_job", default=None)


def current_job() -> JobContext:
    """The job this code runs for.

    Raises:
        RuntimeError: outside a task run by an offload worker.
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("offload.current_job() is only available inside a task run by a worker.")
    return ctx


async def progress(value: float, message: str | None = None) -> None:
    """Report the running job's progress, e.g. ``await progress(0.4, "page 4/10")``.

    Outside a job it does nothing, so a task can also be called directly.
    """
    progress_sync(value, message)


def progress_sync(value: float, message: str | None = None) -> None:
    """:func:`progress` for sync tasks (threads and processes)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.report(value, message)


def set_current(ctx: JobContext | None) -> object:
    """Set the current job (worker use); returns a token for :func:`reset_current`."""
    return _current.set(ctx)


def reset_current(token: object) -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)  # type: ignore[arg-type]
