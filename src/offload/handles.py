"""Job handles: a job's id, status, progress and result, awaited or polled.

``await task.enqueue(...)`` returns a :class:`JobHandle`; ``task.enqueue_sync(...)``
returns a :class:`SyncJobHandle` with the same methods, blocking.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import msgspec

from offload.brokers.base import Broker, ErrorRecord, JobRecord, JobState
from offload.errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from offload.message.codecs import Codec
    from offload.sync import Portal

__all__ = ["JobHandle", "JobInfo", "SyncJobHandle"]

R = TypeVar("R")

WAIT_CHUNK_S = 60.0


class JobInfo(msgspec.Struct, kw_only=True):
    """A job as its caller sees it.

    Attributes:
        id, name, queue: which job.
        state: where it is now.
        attempts: attempts started; ``max_attempts`` allowed.
        enqueued_at, run_at, started_at, finished_at: its timeline (Unix seconds).
        progress, progress_message: the last progress the task reported.
        errors: every failed attempt, oldest first, with tracebacks.
        key, priority: its ordering key and priority.
        cancel_requested: someone asked to cancel it while it ran.
    """

    id: str
    name: str
    queue: str
    state: JobState
    attempts: int
    max_attempts: int
    enqueued_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    progress: float | None
    progress_message: str | None
    errors: list[ErrorRecord]
    key: str | None
    priority: int
    cancel_requested: bool
    worker_id: str | None

    @classmethod
    def from_record(cls, rec: JobRecord) -> JobInfo:
        """The public view of a broker record."""
        return cls(
            id=rec.id,
            name=rec.name,
            queue=rec.queue,
            state=rec.state,
            attempts=rec.attempts,
            max_attempts=rec.max_attempts,
            enqueued_at=rec.enqueued_at,
            run_at=rec.run_at,
            started_at=rec.started_at,
            finished_at=rec.finished_at,
            progress=rec.progress,
            progress_message=rec.progress_message,
            errors=rec.errors,
            key=rec.key,
            priority=rec.priority,
            cancel_requested=rec.cancel_requested,
            worker_id=rec.worker_id,
        )


class HandleBackend(Protocol):
    """What a handle needs from its app."""

    async def broker(self) -> Broker:
        """The broker for the running event loop."""

    @property
    def codec(self) -> Codec:
        """The codec results are written with."""

    @property
    def portal(self) -> Portal:
        """The portal sync calls run through."""


class JobHandle(Generic[R]):
    """A reference to one job. Cheap to make; every method asks the broker."""

    __slots__ = ("_app", "_result_type", "duplicate", "id")

    def __init__(
        self, app: HandleBackend, job_id: str, *, duplicate: bool = False, result_type: Any = None
    ) -> None:
        self._app = app
        self.id = job_id
        #: True when the enqueue matched an existing job (dedupe key or id) instead.
        self.duplicate = duplicate
        self._result_type = result_type

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}{' (duplicate)' if self.duplicate else ''}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def _record(self) -> JobRecord:
        rec = await (await self._app.broker()).get_job(self.id)
        if rec is None:
            raise JobNotFound(self.id)
        return rec

    async def status(self) -> JobState:
        """The job's state now."""
        rec: JobRecord = await self._record()
        return rec.state

    async def info(self) -> JobInfo:
        """Everything about the job: state, attempts, timeline, progress, errors."""
        return JobInfo.from_record(await self._record())

    async def result(self, timeout: float | None = None) -> R:  # noqa: ASYNC109
        """Wait for the job to finish and return its result.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes.

        Raises:
            JobFailed: the job ended dead (carries the remote type, message, traceback).
            JobCancelled: the job was cancelled.
            ResultTimeout: ``timeout`` passed first.
            JobNotFound: no such job (or its result expired).
        """
        broker = await self._app.broker()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            chunk = WAIT_CHUNK_S if deadline is None else max(0.0, deadline - loop.time())
            rec = await broker.wait_job(self.id, min(chunk, WAIT_CHUNK_S))
            if rec is None:
                raise JobNotFound(self.id)
            if rec.state.is_final:
                return self._outcome(rec)
            if deadline is not None and loop.time() >= deadline:
                raise ResultTimeout(self.id, timeout or 0.0, rec.state.value)

    def _outcome(self, rec: JobRecord) -> R:
        if rec.state is JobState.SUCCEEDED:
            if rec.result is None:
                return None  # type: ignore[return-value]
            value = self._app.codec.decode(rec.result)
            if self._result_type is not None:
                value = msgspec.convert(value, self._result_type, strict=False)
            return value  # type: ignore[no-any-return]
        if rec.state is JobState.CANCELLED:
            raise JobCancelled(self.id)
        last = rec.errors[-1] if rec.errors else ErrorRecord(reason="unknown")
        raise JobFailed(self.id, last.type, last.message, last.traceback, last.reason)

    async def cancel(self) -> JobState:
        """Cancel the job: a pending job never starts; a running async job is cancelled at
        its next ``await`` (a sync one is told through ``current_job().cancel_requested``).

        Returns the state right after the request (``running`` until the worker stops it).
        """
        [state] = await (await self._app.broker()).cancel([self.id])
        if state is None:
            raise JobNotFound(self.id)
        return state

    async def watch(self, interval: float = 0.25) -> AsyncIterator[JobInfo]:
        """Yield the job's info each time its state or progress changes, until it is final."""
        last: tuple[Any, ...] | None = None
        broker = await self._app.broker()
        while True:
            rec = await broker.wait_job(self.id, interval)
            if rec is None:
                raise JobNotFound(self.id)
            seen = (rec.state, rec.progress, rec.progress_message, rec.attempts)
            if seen != last:
                last = seen
                yield JobInfo.from_record(rec)
            if rec.state.is_final:
                return
            if rec.state is not JobState.RUNNING:
                await asyncio.sleep(interval)

    @property
    def sync(self) -> SyncJobHandle[R]:
        """The same handle with blocking methods."""
        return SyncJobHandle(self)


class SyncJobHandle(Generic[R]):
    """A :class:`JobHandle` whose methods block (for sync code)."""

    __slots__ = ("_h",)

    def __init__(self, handle: JobHandle[R]) -> None:
        self._h = handle

    def __repr__(self) -> str:
        return repr(self._h)

    @property
    def id(self) -> str:
        """The job id."""
        return self._h.id

    @property
    def duplicate(self) -> bool:
        """True when the enqueue matched an existing job instead."""
        return self._h.duplicate

    @property
    def aio(self) -> JobHandle[R]:
        """The async handle."""
        return self._h

    def status(self) -> JobState:
        """See :meth:`JobHandle.status`."""
        return self._h._app.portal.call(self._h.status)

    def info(self) -> JobInfo:
        """See :meth:`JobHandle.info`."""
        return self._h._app.portal.call(self._h.info)

    def result(self, timeout: float | None = None) -> R:
        """See :meth:`JobHandle.result`."""
        return self._h._app.portal.call(self._h.result, timeout)

    def cancel(self) -> JobState:
        """See :meth:`JobHandle.cancel`."""
        return self._h._app.portal.call(self._h.cancel)

    def watch(self, interval: float = 0.25) -> Iterator[JobInfo]:
        """See :meth:`JobHandle.watch`: yields the job's info as it changes, blocking."""
        updates = self._h.watch(interval)
        while True:
            try:
                yield self._h._app.portal.call(updates.__anext__)
            except StopAsyncIteration:
                return
