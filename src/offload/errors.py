"""The one error tree of offload.

Every exception offload raises derives from :class:`OffloadError`. The tree is shallow
on purpose, so ``except`` clauses stay readable::

    OffloadError
    ├── ConfigurationError          a wrong URL, an unknown option, a bad cron string
    ├── SerializationError          an argument or result the codec cannot encode
    │   └── PayloadTooLarge         the encoded envelope is over the size limit
    ├── DecodeError                 bytes that are not a valid envelope (poison)
    ├── UnknownTask                 no task or subscriber is registered under that name
    ├── BrokerError                 the backend refused or broke (not transient)
    │   ├── BrokerUnavailable       transient: connection, timeout, busy; retried with backoff
    │   └── SchemaOutOfDate         the database schema is behind this version of offload
    ├── QueueFull                   a bounded queue has no room (back pressure)
    ├── JobError                    something about one job
    │   ├── JobFailed               the job ended dead; carries the remote error
    │   ├── JobCancelled            the job was cancelled before it finished
    │   ├── JobNotFound             no such job (never existed, or pruned after its TTL)
    │   └── ResultTimeout           the result did not arrive in time
    └── TaskControl                 raised *inside* a task to steer its own run
        ├── Retry                   run me again later (counts as a failed attempt)
        └── Cancel                  stop me: the job ends cancelled, not dead

The docstring of each class is its default message. Messages say what to do next.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "Cancel",
    "ConfigurationError",
    "DecodeError",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "OffloadError",
    "PayloadTooLarge",
    "QueueFull",
    "ResultTimeout",
    "Retry",
    "SchemaOutOfDate",
    "SerializationError",
    "TaskControl",
    "UnknownTask",
]


class OffloadError(Exception):
    """An offload error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__class__.__doc__ or "").strip())


class ConfigurationError(OffloadError):
    """offload is configured wrongly; the message says which setting to fix."""


class SerializationError(OffloadError):
    """A value could not be encoded; pass JSON-compatible values, msgspec Structs or dataclasses."""


class PayloadTooLarge(SerializationError):
    """The encoded job is larger than the configured limit."""

    def __init__(self, size: int, limit: int, name: str = "") -> None:
        self.size = size
        self.limit = limit
        what = f"job for {name!r}" if name else "job"
        super().__init__(
            f"The encoded {what} is {size:,} bytes, over the limit of {limit:,} bytes. "
            "Store large data elsewhere (a file, an object store, a database row) and pass "
            "its reference, or raise the limit with App(max_payload=...)."
        )


class DecodeError(OffloadError):
    """These bytes are not a valid offload envelope."""


class UnknownTask(OffloadError):
    """No task or subscriber is registered under this name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = ""
        if known:
            shown = ", ".join(sorted(known)[:10])
            hint = f" Registered: {shown}{' ...' if len(known) > 10 else ''}."
        super().__init__(
            f"No task is registered under the name {name!r}.{hint} Check that the worker "
            "imports the module that defines it (offload worker module:app)."
        )


class BrokerError(OffloadError):
    """The broker failed; the chained exception says why."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached right now; it is retried with backoff."""


class SchemaOutOfDate(BrokerError):
    """The database schema is behind this version of offload: run `offload db migrate`."""


class QueueFull(OffloadError):
    """A bounded queue has no room for this job."""

    def __init__(self, queue: str, depth: int, max_depth: int, retry_after_s: float) -> None:
        self.queue = queue
        self.depth = depth
        self.max_depth = max_depth
        self.retry_after_s = retry_after_s
        super().__init__(
            f"Queue {queue!r} is full ({depth:,} of {max_depth:,} jobs waiting); "
            f"try again in about {retry_after_s:.1f}s, or add workers."
        )


class JobError(OffloadError):
    """Something went wrong with one job."""

    def __init__(self, job_id: str, message: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message or f"{(self.__class__.__doc__ or '').strip()} (job {job_id})")


class JobFailed(JobError):
    """The job failed and will not be retried."""

    def __init__(
        self, job_id: str, exc_type: str, exc_message: str, traceback: str, reason: str
    ) -> None:
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback
        self.reason = reason
        super().__init__(
            job_id, f"Job {job_id} failed ({reason}): {exc_type}: {exc_message}".rstrip(": ")
        )


class JobCancelled(JobError):
    """The job was cancelled before it finished."""


class JobNotFound(JobError):
    """No such job: it never existed, or it was pruned after its result TTL."""


class ResultTimeout(JobError):
    """The job did not finish in time; it may still be queued or running."""

    def __init__(self, job_id: str, timeout_s: float, state: str) -> None:
        self.timeout_s = timeout_s
        self.state = state
        super().__init__(
            job_id,
            f"Job {job_id} did not finish within {timeout_s:g}s (it is {state}). "
            "Wait longer, or check that a worker serves its queue (offload status).",
        )


class TaskControl(OffloadError):
    """Raised inside a task to steer its own run."""


class Retry(TaskControl):
    """Run this job again later; this attempt counts as failed.

    Args:
        delay: seconds to wait before the next attempt; ``None`` uses the task's backoff.
        reason: a short text kept with the attempt's error record.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(reason)


class Cancel(TaskControl):
    """Stop this job now; it ends ``cancelled`` and is not retried."""
