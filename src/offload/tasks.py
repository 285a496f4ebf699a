"""Tasks: typed handles on registered functions, to call now or enqueue for later.

``@app.task`` turns a function into a :class:`Task`, typed with the function's own
parameters (``ParamSpec``), so an IDE checks ``send_email.enqueue(...)`` like a call.
Per-call options never share a namespace with the function's arguments::

    await send_email.options(delay=30, priority=5, dedupe_key="welcome-42").enqueue(42)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack

from offload.message.envelope import Signature

if TYPE_CHECKING:
    from offload.app import App
    from offload.handles import JobHandle, SyncJobHandle
    from offload.specs import TaskSpec

__all__ = ["BoundTask", "CallOptions", "Task", "TaskDefaults", "TaskSignature"]

P = ParamSpec("P")
R = TypeVar("R")


class CallOptions(TypedDict, total=False):
    """Options for one enqueue (all optional).

    Attributes:
        queue: send to this queue instead of the task's.
        delay: seconds (or a ``timedelta``) before the job may start.
        eta: the time (``datetime`` or Unix seconds) before which it may not start.
        priority: higher runs first within the queue (default: the task's, usually 0).
        key: ordering/concurrency key: jobs with one key run one at a time, in order.
        key_limit: how many jobs of one key may run at once (default 1).
        dedupe_key: while an unfinished job of the queue holds this key, enqueues with
            it return that job instead of a new one.
        retries: retries after the first attempt.
        timeout: per-attempt time limit in seconds.
        job_id: choose the job id (enqueueing an existing id returns that job).
        result_ttl: seconds to keep the result.
        headers: string metadata carried with the job.
        connection: an open database connection to enqueue inside its transaction
            (PostgreSQL): the job exists if and only if that transaction commits.
        on_success: a task call (``task.s(...)``) enqueued with this job's result.
        on_failure: a task call enqueued with this job's id when it dies.
    """

    queue: str
    delay: float | timedelta
    eta: datetime | float
    priority: int
    key: str
    key_limit: int
    dedupe_key: str
    retries: int
    timeout: float
    job_id: str
    result_ttl: float
    headers: Mapping[str, str]
    connection: Any
    on_success: Signature
    on_failure: Signature


class TaskDefaults(TypedDict, total=False):
    """Defaults a task gives every enqueue (set by ``@app.task``)."""

    priority: int
    concurrency: int
    key_limit: int
    result_ttl: float
    max_recoveries: int


Call = tuple[Any, ...] | Mapping[str, Any] | Signature


class TaskSignature(Signature, dict=True):
    """A :class:`Signature` made by ``task.s(...)``: it also remembers the task's app, so
    a workflow of such calls can be enqueued without naming the app. On the wire it is
    a plain signature."""

    @property
    def app(self) -> App | None:
        """The app of the task this call names."""
        app: App | None = self.__dict__.get("_app")
        return app

    def bind(self, app: App) -> TaskSignature:
        """Remember ``app``; returns self."""
        self.__dict__["_app"] = app
        return self


class BoundTask(Generic[P, R]):
    """A task with per-call options applied; enqueue it like the task itself."""

    __slots__ = ("_opts", "_task")

    def __init__(self, task: Task[P, R], options: CallOptions) -> None:
        self._task = task
        self._opts = options

    def options(self, **options: Unpack[CallOptions]) -> BoundTask[P, R]:
        """More options on top of these."""
        merged: CallOptions = {**self._opts, **options}
        return BoundTask(self._task, merged)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Send one job; return its handle at once (the job runs in a worker).

        Raises:
            SerializationError / PayloadTooLarge: an argument cannot be sent.
            QueueFull: the queue is bounded and full (see ``App.queue``).
            BrokerUnavailable: the broker cannot be reached.
        """
        [handle] = await self._task.app._enqueue(self._task, [(args, kwargs)], self._opts)
        return handle

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncJobHandle[R]:
        """:meth:`enqueue` for sync code; returns a blocking handle."""
        return self._task.app.portal.call(self.enqueue, *args, **kwargs).sync

    async def enqueue_many(self, calls: Iterable[Call]) -> list[JobHandle[R]]:
        """Send many jobs in one round trip.

        Each call is a tuple of positional arguments, a mapping of keyword arguments, or
        a signature from :meth:`Task.s`.
        """
        pairs = [_split(c) for c in calls]
        return await self._task.app._enqueue(self._task, pairs, self._opts)

    def enqueue_many_sync(self, calls: Iterable[Call]) -> list[SyncJobHandle[R]]:
        """:meth:`enqueue_many` for sync code."""
        handles = self._task.app.portal.call(self.enqueue_many, list(calls))
        return [h.sync for h in handles]

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This call written down for later: a workflow step or a callback."""
        opts = {k: v for k, v in self._opts.items() if k not in ("connection",)}
        sig = TaskSignature(name=self._task.name, args=list(args), kwargs=kwargs, options=opts)
        return sig.bind(self._task.app)


class Task(Generic[P, R]):
    """A registered function. Call it directly, or enqueue it to run in a worker."""

    def __init__(self, app: App, spec: TaskSpec, defaults: TaskDefaults) -> None:
        self.app = app
        self.spec = spec
        self.defaults = defaults
        self.__wrapped__ = spec.fn
        self.__doc__ = spec.fn.__doc__
        self.__name__ = getattr(spec.fn, "__name__", spec.name)
        self.__qualname__ = getattr(spec.fn, "__qualname__", spec.name)
        self.__module__ = getattr(spec.fn, "__module__", "")

    @property
    def name(self) -> str:
        """The name workers know it by."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.spec.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here and now (no queue, no worker)."""
        return self.spec.fn(*args, **kwargs)

    def options(self, **options: Unpack[CallOptions]) -> BoundTask[P, R]:
        """Per-call options (queue, delay, priority, key, dedupe_key, retries, ...)."""
        return BoundTask(self, options)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Send one job; see :meth:`BoundTask.enqueue`."""
        return await BoundTask(self, {}).enqueue(*args, **kwargs)

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncJobHandle[R]:
        """Send one job from sync code; see :meth:`BoundTask.enqueue_sync`."""
        return BoundTask(self, {}).enqueue_sync(*args, **kwargs)

    async def enqueue_many(self, calls: Iterable[Call]) -> list[JobHandle[R]]:
        """Send many jobs in one round trip; see :meth:`BoundTask.enqueue_many`."""
        return await BoundTask(self, {}).enqueue_many(calls)

    def enqueue_many_sync(self, calls: Iterable[Call]) -> list[SyncJobHandle[R]]:
        """:meth:`enqueue_many` from sync code."""
        return BoundTask(self, {}).enqueue_many_sync(calls)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This call written down for later: a workflow step or a callback."""
        return BoundTask(self, {}).s(*args, **kwargs)


def _split(call: Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(call, Signature):
        return tuple(call.args), dict(call.kwargs)
    if isinstance(call, Mapping):
        return (), dict(call)
    if isinstance(call, tuple):
        return call, {}
    raise TypeError(
        f"enqueue_many takes tuples of arguments, mappings of keyword arguments or "
        f"signatures, not {type(call).__name__}"
    )


def when(delay: float | timedelta | None, eta: datetime | float | None, now: float) -> float | None:
    """The Unix time a job may start, from a delay or an ETA."""
    if eta is not None:
        return eta.timestamp() if isinstance(eta, datetime) else float(eta)
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    return now + seconds if seconds > 0 else None
