"""offload: background jobs, events, schedules and results for Python.

Embedded on SQLite with zero set-up; distributed on Redis or PostgreSQL. Start with
:class:`App`::

    from offload import App

    app = App()                          # sqlite:///offload.db

    @app.task(retries=3)
    async def send_email(to: str) -> None: ...

    job = await send_email.enqueue("a@example.com")
"""

from offload.app import App
from offload.brokers.base import ErrorRecord, JobState
from offload.context import JobContext, current_job, progress, progress_sync
from offload.errors import (
    BrokerError,
    BrokerUnavailable,
    Cancel,
    ConfigurationError,
    DecodeError,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    OffloadError,
    PayloadTooLarge,
    QueueFull,
    ResultTimeout,
    Retry,
    SchemaOutOfDate,
    SerializationError,
    UnknownTask,
)
from offload.handles import JobHandle, JobInfo, SyncJobHandle
from offload.message.envelope import Signature
from offload.retry import RetryPolicy, constant, exponential
from offload.tasks import BoundTask, CallOptions, Task
from offload.workflows import Workflow, WorkflowHandle, chain, chord, group

__version__ = "0.1.0"

__all__ = [
    "App",
    "BoundTask",
    "BrokerError",
    "BrokerUnavailable",
    "CallOptions",
    "Cancel",
    "ConfigurationError",
    "DecodeError",
    "ErrorRecord",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "OffloadError",
    "PayloadTooLarge",
    "QueueFull",
    "ResultTimeout",
    "Retry",
    "RetryPolicy",
    "SchemaOutOfDate",
    "SerializationError",
    "Signature",
    "SyncJobHandle",
    "Task",
    "UnknownTask",
    "Workflow",
    "WorkflowHandle",
    "__version__",
    "chain",
    "chord",
    "constant",
    "current_job",
    "exponential",
    "group",
    "progress",
    "progress_sync",
]
