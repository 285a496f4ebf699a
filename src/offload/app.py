"""The App: a registry of tasks and subscribers bound to a broker.

::

    from offload import App

    app = App("sqlite:///offload.db")      # the default when no URL is given

    @app.task(retries=5, timeout=30)
    async def send_email(to: str, subject: str) -> str: ...

    job = await send_email.enqueue("a@example.com", subject="hi")
    print(await job.result(timeout=10))

The broker URL is resolved when first needed: ``App.use_broker()`` (the CLI's
``--broker``) wins, then the ``OFFLOAD_BROKER`` environment variable, then the URL given
here, then ``sqlite:///offload.db``. Nothing connects until the first call that needs the
broker (or ``await app.open()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Self, TypeVar, overload

import msgspec

from offload.brokers import DEFAULT_URL, Broker, open_broker, scheme_of
from offload.brokers.base import (
    DAY,
    EnqueueRequest,
    EventRequest,
    GroupSpec,
    TopicSpec,
    group_queue,
)
from offload.clock import Clock, system_clock
from offload.errors import ConfigurationError, QueueFull
from offload.flow.limits import QueueConfig, WhenFull, admit
from offload.handles import JobHandle
from offload.message.codecs import Codec, get_codec
from offload.message.envelope import MAX_NAME_LENGTH, Envelope, encode_envelope
from offload.message.ids import new_id
from offload.metrics.estimates import RetryAfter
from offload.metrics.littles_law import Analytics
from offload.retry import RetryPolicy
from offload.schedules import (
    BoundSchedule,
    Cron,
    Every,
    Misfire,
    Schedule,
    ScheduleInfo,
    add_schedule,
    schedule_infos,
)
from offload.specs import (
    Binder,
    ExecutorKind,
    Rate,
    Registry,
    SubscriberSpec,
    TaskSpec,
    parse_rate,
)
from offload.subscribers import GroupLag, group_lag
from offload.sync import Portal
from offload.tasks import CallOptions, Task, TaskDefaults, when
from offload.workflows import follow_ups as workflow_follow_ups
from offload.workflows import internal_tasks

if TYPE_CHECKING:
    from types import TracebackType

    from offload.metrics.report import StatsReport
    from offload.middleware import Middleware
    from offload.worker.scheduler import Scheduler
    from offload.worker.worker import SideTask, Worker, WorkerOptions, WorkerStats

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-@")


def _check_name(kind: str, name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not set(name) <= _NAME_CHARS:
        raise ConfigurationError(
            f"Invalid {kind} name {name!r}: use 1..{MAX_NAME_LENGTH} characters from "
            "letters, digits and _ . : - @"
        )
    return name


class App:
    """Tasks, subscribers and queues, bound to one broker.

    Args:
        broker: broker URL (``sqlite:///path.db``, ``redis://...``, ``postgresql://...``,
            ``memory://``); default ``sqlite:///offload.db``.
        codec: ``json`` (default; readable from any language) or ``msgpack``.
        max_payload: the largest encoded job accepted, in bytes.
        result_ttl: seconds results are kept after a job succeeds.
        dead_ttl: seconds dead jobs are kept in the dead-letter store.
        default_queue: the queue of tasks that name none.
        clock: time source (tests pass a ``FakeClock``).
        middleware: hooks around enqueue, execution and outcomes (tracing, metrics).
    """

    def __init__(
        self,
        broker: str | None = None,
        *,
        codec: Literal["json", "msgpack"] = "json",
        max_payload: int | None = 1 << 20,
        result_ttl: float = DAY,
        dead_ttl: float = 7 * DAY,
        default_queue: str = "default",
        clock: Clock = system_clock,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        if broker is not None:
            scheme_of(broker)  # fail early on a wrong URL
        self._url = broker
        self._override: str | None = None
        self._codec_name = codec
        self._codec = get_codec(codec)
        self.max_payload = max_payload
        self.result_ttl = result_ttl
        self.dead_ttl = dead_ttl
        self.default_queue = _check_name("queue", default_queue)
        self.clock = clock
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.subscribers: dict[str, SubscriberSpec] = {}
        self.queues: dict[str, QueueConfig] = {}
        self.topics: dict[str, TopicSpec] = {}
        self._subscriber_keys: dict[str, dict[str, Callable[[Any], Any]]] = {}
        self._brokers: dict[asyncio.AbstractEventLoop | None, Broker] = {}
        self._opening: dict[asyncio.AbstractEventLoop | None, asyncio.Lock] = {}
        self._lock = threading.Lock()
        self._portal = Portal()
        self.schedules: dict[str, Schedule] = {}
        self.scheduler_lease = 10.0
        self._analytics = Analytics()
        self._estimate_retry = RetryAfter()
        self.middleware: list[Middleware] = list(middleware)

    # ------------------------------------------------------------------ configuration

    @property
    def url(self) -> str:
        """The broker URL in effect (see the module docstring for precedence)."""
        return self._override or os.environ.get("OFFLOAD_BROKER") or self._url or DEFAULT_URL

    def use_broker(self, url: str) -> None:
        """Point the app at another broker (before it connects); the CLI's ``--broker``."""
        scheme_of(url)
        if self._brokers:
            raise ConfigurationError("use_broker() must be called before the app connects")
        self._override = url

    @property
    def codec(self) -> Codec:
        """The codec jobs and results are written with."""
        return self._codec

    @property
    def portal(self) -> Portal:
        """The background loop that sync calls (``enqueue_sync``...) run on."""
        return self._portal

    def add_middleware(self, middleware: Middleware) -> None:
        """Add a middleware after those given to the constructor."""
        self.middleware.append(middleware)

    def queue(
        self,
        name: str,
        *,
        max_depth: int | None = None,
        when_full: WhenFull = "block",
        block_timeout: float = 30.0,
    ) -> QueueConfig:
        """Declare a queue's bound: at most ``max_depth`` pending jobs.

        When it is full, ``when_full="block"`` makes enqueue wait for room (up to
        ``block_timeout`` seconds, then ``QueueFull``); ``"reject"`` raises ``QueueFull``
        at once with ``retry_after_s``.
        """
        cfg = QueueConfig(_check_name("queue", name), max_depth, when_full, block_timeout)
        self.queues[name] = cfg
        return cfg

    def queue_config(self, name: str) -> QueueConfig:
        """The declared config of a queue (unbounded when never declared)."""
        return self.queues.get(name) or QueueConfig(name)

    def topic(
        self, name: str, *, retention: float | None = 7 * DAY, max_events: int | None = None
    ) -> TopicSpec:
        """Declare a topic's retention: how long (seconds) and how many events are kept
        for replay. Topics are created on first use with a 7-day retention otherwise."""
        spec = TopicSpec(
            name=_check_name("topic", name), retention_s=retention, max_events=max_events
        )
        self.topics[name] = spec
        return spec

    # ------------------------------------------------------------------ decorators

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        priority: int = 0,
        backoff: RetryPolicy | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        executor: Literal["thread", "process"] | None = None,
        rate: str | Rate | None = None,
        rate_per_key: bool = False,
        concurrency: int | None = None,
        key_limit: int = 1,
        lease: float | None = None,
        result_ttl: float | None = None,
        max_recoveries: int = 3,
    ) -> _TaskDecorator: ...

    def task(self, *fn: Callable[..., Any], **options: Any) -> Any:
        """Register a function as a task (bare ``@app.task`` or ``@app.task(...)``).

        Args:
            name: the name workers know it by (default ``module.qualname``).
            queue: its default queue (default: the app's ``default_queue``).
            retries: retries after a failed first attempt (``max_attempts = retries + 1``).
            timeout: per-attempt time limit in seconds.
            priority: default priority of its jobs (higher runs first within a queue).
            backoff: delays between retries (default: exponential from 1 s, with jitter).
            retry_on: exception types that are retried; other exceptions go straight to
                the dead letters.
            executor: for sync functions, ``thread`` (default) or ``process`` (CPU-bound
                work; a time limit kills the process).
            rate: a rate limit shared by every worker, e.g. ``"100/s"``; excess jobs wait
                (none is dropped). Starts are spread evenly, with bursts of up to a tenth
                of a second's worth; pass ``Rate(per_s, burst)`` to choose the burst.
            rate_per_key: apply ``rate`` to each job key separately.
            concurrency: at most this many of its jobs run at once, across all workers.
            key_limit: how many jobs of one ``key`` may run at once (default 1: in order).
            lease: lease length for its jobs, if different from the worker's.
            result_ttl: seconds its results are kept.
            max_recoveries: times a job may be recovered after its worker died before it
                is dead-lettered as a poison job.
        """
        decorator = _TaskDecorator(self, options)
        if not fn:
            return decorator
        if len(fn) > 1 or options:
            raise TypeError("use @app.task or @app.task(option=...), not both")
        return decorator(fn[0])

    def _register_task(self, fn: Callable[..., Any], options: Mapping[str, Any]) -> Task[Any, Any]:
        name = _check_name("task", options.get("name") or f"{fn.__module__}.{fn.__qualname__}")
        if name in self.tasks:
            raise ConfigurationError(f"A task named {name!r} is already registered.")
        spec = TaskSpec(
            name=name,
            fn=fn,
            executor=_executor(fn, options.get("executor")),
            binder=Binder(fn),
            queue=_check_name("queue", options.get("queue") or self.default_queue),
            max_attempts=1 + int(options.get("retries", 0)),
            timeout_s=options.get("timeout"),
            retry=options.get("backoff") or RetryPolicy(),
            retry_on=tuple(options.get("retry_on", (Exception,))),
            rate=parse_rate(options.get("rate")),
            rate_per_key=bool(options.get("rate_per_key", False)),
            lease_s=options.get("lease"),
            result_type=_return_type(fn),
        )
        defaults: TaskDefaults = {
            "priority": int(options.get("priority", 0)),
            "key_limit": int(options.get("key_limit", 1)),
            "max_recoveries": int(options.get("max_recoveries", 3)),
        }
        if options.get("concurrency") is not None:
            defaults["concurrency"] = int(options["concurrency"])
        if options.get("result_ttl") is not None:
            defaults["result_ttl"] = float(options["result_ttl"])
        task: Task[Any, Any] = Task(self, spec, defaults)
        self.tasks[name] = task
        return task

    # ------------------------------------------------------------------ schedules

    def cron(
        self,
        expr: str,
        *,
        tz: str = "UTC",
        schedule_name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        jitter: float = 0.0,
        misfire: Misfire = "skip",
        max_catch_up: int = 10,
        grace: float = 60.0,
        **task_options: Any,
    ) -> _TaskDecorator:
        """Run a task on a cron schedule (registering it, unless it is a task already).

        ``expr`` has five fields, ``minute hour day-of-month month day-of-week`` (a sixth,
        last, is seconds), read in the wall-clock time of ``tz``. Each tick becomes one
        job with the id ``tick:<schedule>:<UTC time>``, fired by whichever scheduler leads
        (``offload worker --scheduler`` or ``offload scheduler``). See
        :mod:`offload.schedules` for daylight saving time and missed ticks.

        Args:
            expr: the cron expression, e.g. ``"*/5 * * * *"``.
            tz: an IANA time zone, e.g. ``"Europe/Berlin"`` (default UTC).
            schedule_name: the schedule's name (default: the task name).
            args, kwargs: the arguments of every tick's job.
            jitter: each tick's job starts up to this many seconds late (spreads load).
            misfire: what to do with ticks missed while no scheduler ran: ``"skip"``
                (default) or ``"catch_up"``.
            max_catch_up: with ``catch_up``, fire at most this many missed ticks.
            grace: seconds a tick may be late and still fire as on time.
            **task_options: as for :meth:`task` (``queue``, ``retries``, ``timeout``...).
        """
        trigger = Cron(expr, tz)
        return self._scheduled(
            trigger,
            task_options,
            name=schedule_name,
            args=args,
            kwargs=kwargs,
            jitter=jitter,
            misfire=misfire,
            max_catch_up=max_catch_up,
            grace=grace,
        )

    def every(
        self,
        seconds: float = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        jitter: float = 0.0,
        schedule_name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        misfire: Misfire = "skip",
        max_catch_up: int = 10,
        grace: float = 60.0,
        **task_options: Any,
    ) -> _TaskDecorator:
        """Run a task at a fixed interval (registering it, unless it is a task already).

        Ticks fall on multiples of the interval since the Unix epoch (every 30 s fires at
        :00 and :30), so all schedulers agree on them. ``jitter`` delays each tick's job
        by a deterministic amount in ``[0, jitter)`` seconds. The other arguments are as
        for :meth:`cron`.
        """
        trigger = Every(seconds + 60.0 * minutes + 3600.0 * hours)
        return self._scheduled(
            trigger,
            task_options,
            name=schedule_name,
            args=args,
            kwargs=kwargs,
            jitter=jitter,
            misfire=misfire,
            max_catch_up=max_catch_up,
            grace=grace,
        )

    def _scheduled(
        self, trigger: Cron | Every, task_options: Mapping[str, Any], **schedule: Any
    ) -> _TaskDecorator:
        """A task decorator that also registers ``trigger`` as the task's schedule."""
        return _TaskDecorator(
            self,
            task_options,
            then=lambda task: add_schedule(self.schedules, task, trigger, **schedule),
        )

    def on(
        self,
        topic: str,
        *,
        group: str | None = None,
        key: Callable[[Any], Any] | None = None,
        retries: int = 0,
        timeout: float | None = None,
        backoff: RetryPolicy | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        executor: Literal["thread", "process"] | None = None,
        from_start: bool = False,
    ) -> Callable[[F], F]:
        """Subscribe a handler to a topic.

        Every group gets every event; within a group, events are shared among workers.

        Args:
            topic: the topic name.
            group: the subscriber group (default: the function's name).
            key: a function of the event giving its ordering key in this group: events
                with one key are handled one at a time, in publish order.
            retries, timeout, backoff, retry_on, executor: as for tasks.
            from_start: a new group first receives the events already retained.
        """

        def register(fn: F) -> F:
            name = _check_name("group", group or fn.__name__)
            queue = group_queue(_check_name("topic", topic), name)
            if queue in self.subscribers:
                raise ConfigurationError(f"Group {name!r} already subscribes to {topic!r}.")
            self.subscribers[queue] = SubscriberSpec(
                topic=topic,
                group=name,
                fn=fn,
                executor=_executor(fn, executor),
                event_type=_event_type(fn),
                max_attempts=1 + retries,
                timeout_s=timeout,
                retry=backoff or RetryPolicy(),
                retry_on=retry_on,
                from_start=from_start,
            )
            if key is not None:
                self._subscriber_keys.setdefault(topic, {})[name] = key
            return fn

        return register

    # ------------------------------------------------------------------ lifecycle

    async def broker(self) -> Broker:
        """The open broker for the running event loop (connecting on first use)."""
        loop = None if self._shared_broker() else asyncio.get_running_loop()
        broker = self._brokers.get(loop)
        if broker is not None:
            return broker
        with self._lock:
            lock = self._opening.setdefault(loop, asyncio.Lock())
        async with lock:
            broker = self._brokers.get(loop)
            if broker is None:
                broker = open_broker(self.url, clock=self.clock)
                await broker.open()
                await self._ensure_topics(broker)
                self._brokers[loop] = broker
        return broker

    def _shared_broker(self) -> bool:
        # The memory broker *is* the process's state: every loop must share it.
        return scheme_of(self.url) == "memory"

    async def _ensure_topics(self, broker: Broker) -> None:
        groups: dict[str, list[GroupSpec]] = {}
        for sub in self.subscribers.values():
            groups.setdefault(sub.topic, []).append(
                GroupSpec(
                    topic=sub.topic,
                    group=sub.group,
                    from_start=sub.from_start,
                    max_attempts=sub.max_attempts,
                    result_ttl_s=min(self.result_ttl, 3600.0),
                    dead_ttl_s=self.dead_ttl,
                )
            )
        for name in set(groups) | set(self.topics):
            spec = self.topics.get(name) or TopicSpec(name=name)
            await broker.ensure_topic(spec, groups.get(name, []))

    async def open(self) -> Self:
        """Connect now (otherwise the first call that needs the broker does)."""
        await self.broker()
        return self

    async def close(self) -> None:
        """Close every broker connection this app opened, and the sync portal."""
        brokers, self._brokers = dict(self._brokers), {}
        for loop, broker in brokers.items():
            if loop is self._portal.loop and loop is not None:
                asyncio.run_coroutine_threadsafe(broker.close(), loop).result(timeout=10)
            else:
                await broker.close()
        self._portal.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ enqueue

    async def _enqueue(
        self,
        task: Task[Any, R],
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
        opts: CallOptions,
    ) -> list[JobHandle[R]]:
        requests = [self._request(task, list(a), dict(k), opts) for a, k in calls]
        if not requests:
            return []
        broker = await self.broker()
        connection = opts.get("connection")
        if connection is not None:
            outcomes = await self._enqueue_in_transaction(broker, requests, connection)
        else:
            outcomes = await admit(broker, requests, self.queue_config, self._retry_after)
        rtype = task.spec.result_type
        return [
            JobHandle(self, o.job_id, duplicate=o.status == "duplicate", result_type=rtype)
            for o in outcomes
        ]

    async def _enqueue_in_transaction(
        self, broker: Broker, requests: list[EnqueueRequest], connection: Any
    ) -> list[Any]:
        if not broker.capabilities.transactional_enqueue:
            raise ConfigurationError(
                f"enqueue(connection=...) needs a broker that can join a transaction "
                f"(PostgreSQL); {broker.capabilities.name} cannot."
            )
        enqueue: Callable[..., Awaitable[list[Any]]] = broker.enqueue
        outcomes = await enqueue(requests, connection=connection)
        for request, outcome in zip(requests, outcomes, strict=True):
            if outcome.status == "full":
                # Waiting for room would hold the caller's transaction open: reject, and the
                # caller rolls back (or retries after ``retry_after_s``).
                max_depth = request.max_depth or outcome.depth
                retry = await self._retry_after(request.queue, outcome.depth)
                raise QueueFull(request.queue, outcome.depth, max_depth, retry)
        return outcomes

    def _request(
        self,
        task: Task[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
        opts: CallOptions,
        **fields: Any,
    ) -> EnqueueRequest:
        """One enqueue request; ``fields`` sets more envelope fields (workflow steps)."""
        spec, defaults = task.spec, task.defaults
        now = self.clock.now()
        queue = _check_name("queue", opts.get("queue") or spec.queue)
        key = opts.get("key")
        key_limit = opts.get("key_limit", defaults.get("key_limit", 1))
        if key is None and "concurrency" in defaults:
            key, key_limit = f"~{spec.name}", defaults["concurrency"]
        max_attempts = 1 + opts["retries"] if "retries" in opts else spec.max_attempts
        env = Envelope(
            id=opts.get("job_id") or new_id(),
            name=spec.name,
            queue=queue,
            args=args,
            kwargs=kwargs,
            key=key,
            dedupe_key=opts.get("dedupe_key"),
            priority=opts.get("priority", defaults.get("priority", 0)),
            eta=when(opts.get("delay"), opts.get("eta"), now),
            max_attempts=max_attempts,
            timeout_s=opts.get("timeout", spec.timeout_s),
            enqueued_at=now,
            headers=dict(opts.get("headers", {})),
            on_success=[opts["on_success"]] if "on_success" in opts else [],
            on_failure=[opts["on_failure"]] if "on_failure" in opts else [],
            **fields,
        )
        for mw in self.middleware:
            mw.on_enqueue(env)
        return self.request_for(
            env,
            key_limit=key_limit,
            result_ttl=opts.get("result_ttl", defaults.get("result_ttl")),
            max_recoveries=defaults.get("max_recoveries", 3),
        )

    def request_for(
        self,
        env: Envelope,
        *,
        key_limit: int = 1,
        result_ttl: float | None = None,
        max_recoveries: int = 3,
        bounded: bool = True,
    ) -> EnqueueRequest:
        """Encode an envelope into the broker's enqueue request.

        Raises:
            ConfigurationError: a routing value no backend can store (a priority or limit
                out of range, a NUL character in an id, key or name).
        """
        _check_routing(env, key_limit, max_recoveries)
        payload = encode_envelope(env, self._codec, self.max_payload)
        return EnqueueRequest(
            id=env.id,
            queue=env.queue,
            name=env.name,
            payload=payload,
            enqueued_at=env.enqueued_at,
            kind=env.kind,
            priority=env.priority,
            eta=env.eta,
            key=env.key,
            key_limit=key_limit,
            dedupe_key=env.dedupe_key,
            max_attempts=env.max_attempts,
            max_recoveries=max_recoveries,
            max_depth=self.queue_config(env.queue).max_depth if bounded else None,
            result_ttl_s=self.result_ttl if result_ttl is None else result_ttl,
            dead_ttl_s=self.dead_ttl,
        )

    async def _retry_after(self, queue: str, depth: int) -> float:
        """Seconds until a full queue likely has room, from its measured completion rate."""
        max_depth = self.queue_config(queue).max_depth or depth
        return await self._estimate_retry(await self.broker(), queue, depth, max_depth)

    # ------------------------------------------------------------------ analytics

    async def stats(
        self,
        queues: Sequence[str] | None = None,
        *,
        window: float = 60.0,
        target_wait: float = 1.0,
    ) -> StatsReport:
        """Little's-Law analytics per queue and per task over a sliding window.

        λ (arrivals/s), X (completions/s), L (jobs in system, time-averaged), W (mean time
        in system), wait and service percentiles, utilisation, the check L ≈ λ·W, and
        predictions (drain time, wait for a job enqueued now, slots needed to keep the mean
        wait under ``target_wait`` seconds), each with its assumptions. The app keeps the
        samples, so the window fills as it is called; the first call waits a second to
        measure rates. See ``docs/back-pressure.md``.

        Args:
            queues: only these queues (default: every queue in the broker).
            window: the sliding window, in seconds.
            target_wait: the mean wait ``slots_needed`` is computed for, in seconds.
        """
        return await self._analytics.report(
            await self.broker(), window_s=window, queues=queues, target_wait_s=target_wait
        )

    def stats_sync(
        self,
        queues: Sequence[str] | None = None,
        *,
        window: float = 60.0,
        target_wait: float = 1.0,
    ) -> StatsReport:
        """:meth:`stats` for sync code."""
        return self._portal.call(self.stats, queues, window=window, target_wait=target_wait)

    # ------------------------------------------------------------------ events

    async def publish(
        self,
        topic: str,
        event: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish one event; every subscriber group receives it. Returns the event id."""
        [event_id] = await self.publish_many(topic, [event], key=key, headers=headers)
        return event_id

    async def publish_many(
        self,
        topic: str,
        events: Sequence[Any],
        *,
        key: str | Callable[[Any], Any] | None = None,
        headers: Mapping[str, str] | None = None,
        connection: Any = None,
    ) -> list[str]:
        """Publish events in one round trip, in order. ``key`` orders them in every group
        (a string, or a function of the event); a subscriber's own ``key=`` wins for its
        group. ``connection`` publishes inside the caller's transaction (PostgreSQL)."""
        _check_name("topic", topic)
        now = self.clock.now()
        requests = [self._event_request(topic, e, key, headers, now) for e in events]
        broker = await self.broker()
        if connection is not None:
            if not broker.capabilities.transactional_enqueue:
                raise ConfigurationError("publish(connection=...) needs the PostgreSQL broker.")
            publish: Callable[..., Awaitable[list[int]]] = broker.publish
            await publish(topic, requests, connection=connection)
        else:
            await broker.publish(topic, requests)
        return [r.id for r in requests]

    def _event_request(
        self,
        topic: str,
        event: Any,
        key: str | Callable[[Any], Any] | None,
        headers: Mapping[str, str] | None,
        now: float,
    ) -> EventRequest:
        env = Envelope(
            id=new_id(),
            kind="event",
            name=topic,
            queue=topic,
            args=[event],
            enqueued_at=now,
            headers=dict(headers or {}),
        )
        for mw in self.middleware:
            mw.on_publish(env)
        event_key = key(event) if callable(key) else key
        group_keys = {}
        for group, fn in self._subscriber_keys.get(topic, {}).items():
            typed = _as_event_type(event, self.subscribers[group_queue(topic, group)].event_type)
            if typed is not _INVALID:  # an invalid event is dead-lettered by that group
                group_keys[group] = str(fn(typed))
        return EventRequest(
            id=env.id,
            payload=encode_envelope(env, self._codec, self.max_payload),
            published_at=now,
            key=None if event_key is None else str(event_key),
            group_keys=group_keys,
        )

    async def replay(
        self,
        topic: str,
        group: str,
        *,
        from_offset: int | None = None,
        from_time: float | dt.datetime | None = None,
    ) -> int:
        """Deliver again to ``group`` every retained event of ``topic`` from an offset or a
        time (a datetime or Unix seconds). Returns how many events were re-delivered.

        Raises:
            ConfigurationError: neither or both starting points given, or no such group.
        """
        if (from_offset is None) == (from_time is None):
            raise ConfigurationError("replay needs exactly one of from_offset or from_time")
        if isinstance(from_time, dt.datetime):
            from_time = from_time.timestamp()
        broker = await self.broker()
        infos = {t.name: t for t in await broker.topics()}
        if topic not in infos or group not in {g.group for g in infos[topic].groups}:
            known = sorted(g.group for g in infos[topic].groups) if topic in infos else []
            raise ConfigurationError(
                f"Topic {topic!r} has no group {group!r}"
                + (f" (its groups: {', '.join(known)})." if known else ".")
            )
        return await broker.replay(topic, group, from_offset=from_offset, from_time=from_time)

    async def event_lag(self, topics: list[str] | None = None) -> list[GroupLag]:
        """How far each subscriber group is behind (events pending, oldest age, dead)."""
        return await group_lag(await self.broker(), topics)

    # ------------------------------------------------------------------ jobs and workers

    def job(self, job_id: str) -> JobHandle[Any]:
        """A handle on any job by id."""
        return JobHandle(self, job_id)

    def registry(self) -> Registry:
        """What a worker needs to run this app's tasks and subscribers."""
        return Registry(
            tasks={name: t.spec for name, t in {**internal_tasks(self), **self.tasks}.items()},
            subscribers=dict(self.subscribers),
            codec_name=self._codec_name,
            max_payload=self.max_payload,
            default_queues=tuple(self.served_queues()),
            middleware=tuple(self.middleware),
        )

    def served_queues(self) -> list[str]:
        """Every queue this app's tasks and subscribers use (what a worker serves by default)."""
        queues = {self.default_queue} | {t.spec.queue for t in self.tasks.values()}
        return sorted(queues) + sorted(self.subscribers)

    async def worker(self, options: WorkerOptions | None = None, **kwargs: Any) -> Worker:
        """A worker for this app on the running loop's broker (not started)."""
        from offload.worker.worker import Worker, WorkerOptions

        if options is None:
            kwargs.setdefault("queues", tuple(self.served_queues()))
            options = WorkerOptions(**kwargs)
        return Worker(
            self.registry(),
            await self.broker(),
            options,
            clock=self.clock,
            follow_ups=self.follow_ups,
            side_tasks=self.side_tasks(options),
        )

    def follow_ups(self, env: Envelope, value: Any, outcome: str) -> list[EnqueueRequest]:
        """Jobs to enqueue atomically with an outcome: the next workflow stage, a chord's
        join, ``on_success``/``on_failure`` callbacks (see :mod:`offload.workflows`)."""
        if not (env.chain or env.chord or env.on_success or env.on_failure):
            return []
        kind: Literal["success", "failure"] = "success" if outcome == "success" else "failure"
        return workflow_follow_ups(self, env, value, kind)

    def side_tasks(self, options: WorkerOptions) -> list[SideTask]:
        """Coroutines a worker of this app runs beside its own loops: the scheduler, when
        ``options.scheduler`` is set and the app has schedules."""
        if not (options.scheduler and self.schedules):
            return []

        async def run_scheduler(worker: Worker) -> None:
            await self.scheduler(worker.broker).run()

        return [("offload-scheduler", run_scheduler)]

    def scheduler(self, broker: Broker) -> Scheduler:
        """A scheduler of this app's schedules on ``broker`` (not started)."""
        from offload.worker.scheduler import Scheduler, SchedulerOptions

        plans = [BoundSchedule(self, s) for s in self.schedules.values()]
        options = SchedulerOptions(lease_s=self.scheduler_lease)
        return Scheduler(broker, plans, clock=self.clock, options=options)

    async def run_scheduler(self) -> None:
        """Run this app's scheduler in this loop until cancelled (``offload scheduler``).

        Raises:
            ConfigurationError: the app declares no schedule.
        """
        if not self.schedules:
            raise ConfigurationError(
                "This app has no schedules: declare one with @app.cron(...) or @app.every(...)."
            )
        await self.scheduler(await self.broker()).run()

    async def schedule_infos(self) -> list[ScheduleInfo]:
        """Every schedule with its trigger, last tick and next tick (CLI, dashboard)."""
        return await schedule_infos(self)

    @contextlib.asynccontextmanager
    async def background_worker(self, **kwargs: Any) -> AsyncIterator[Worker]:
        """Run a worker in this event loop for the duration of an ``async with`` block.

        For services that run their own workers (e.g. in a FastAPI lifespan), scripts and
        tests. On exit the worker stops claiming and shuts down gracefully. Options are
        those of :class:`~offload.worker.worker.WorkerOptions`.
        """
        worker = await self.worker(**kwargs)
        task = asyncio.get_running_loop().create_task(worker.run(), name="offload-worker")
        try:
            yield worker
        finally:
            worker.stop()
            await task

    async def run_worker(self, **kwargs: Any) -> WorkerStats:
        """Run a worker in this loop until it stops (``burst=True`` stops when idle)."""
        return await (await self.worker(**kwargs)).run()

    def __repr__(self) -> str:
        from offload.brokers.base import redact_url

        return f"<App {redact_url(self.url)} tasks={len(self.tasks)}>"


class _TaskDecorator:
    """``@app.task(...)``: keeps the options, registers the function it decorates.

    ``@app.cron``/``@app.every`` pass ``then``, which adds the schedule; they may also
    decorate a task already registered (to give it a second schedule).
    """

    def __init__(
        self,
        app: App,
        options: Mapping[str, Any],
        then: Callable[[Task[Any, Any]], object] | None = None,
    ) -> None:
        self._app = app
        self._options = options
        self._then = then

    @overload
    def __call__(self, fn: Task[P, R], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]:
        if isinstance(fn, Task):
            if self._options:
                raise ConfigurationError(
                    f"{fn.name} is already a task: give task options to its first decorator."
                )
            task: Task[Any, Any] = fn
        else:
            task = self._app._register_task(fn, self._options)
        if self._then is not None:
            self._then(task)
        return task


def _executor(fn: Callable[..., Any], requested: str | None) -> ExecutorKind:
    if inspect.iscoroutinefunction(fn):
        if requested not in (None, "async"):
            raise ConfigurationError(
                f"{fn.__qualname__} is async: it runs on the event loop; executor= is only "
                "for sync functions."
            )
        return "async"
    if requested in (None, "thread"):
        return "thread"
    if requested == "process":
        return "process"
    raise ConfigurationError(f"executor must be 'thread' or 'process', not {requested!r}")


def _return_type(fn: Callable[..., Any]) -> Any:
    import typing

    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    if hint in (None, type(None), Any) or isinstance(hint, TypeVar):
        return None
    try:
        msgspec.inspect.type_info(hint)
    except Exception:
        return None
    return hint


_INT32 = 2**31 - 1


def _check_routing(env: Envelope, key_limit: int, max_recoveries: int) -> None:
    """Refuse, at enqueue, routing values some backend would refuse later (a 32-bit
    column, text without NUL): a later refusal would fail a whole batch of outcomes."""
    for name, value in (
        ("priority", env.priority),
        ("max_attempts", env.max_attempts),
        ("key_limit", key_limit),
        ("max_recoveries", max_recoveries),
    ):
        if not isinstance(value, int) or not -_INT32 <= value <= _INT32:
            raise ConfigurationError(
                f"Invalid {name} {value!r} for a job of {env.name!r}: use an integer "
                f"between {-_INT32:,} and {_INT32:,}."
            )
    for name, text in (("id", env.id), ("key", env.key), ("dedupe_key", env.dedupe_key)):
        if text is not None and ("\x00" in text or not 0 < len(text) <= 1000):
            raise ConfigurationError(
                f"Invalid {name} {text[:60]!r}... for a job of {env.name!r}: use 1 to 1,000 "
                "characters, none of them NUL."
            )


_INVALID = object()


def _as_event_type(event: Any, event_type: Any) -> Any:
    """The event as a subscriber's handler will see it (so its key function sees the same)."""
    if event_type is None or (isinstance(event_type, type) and isinstance(event, event_type)):
        return event
    try:
        return msgspec.convert(msgspec.to_builtins(event), event_type, strict=False)
    except (msgspec.ValidationError, TypeError):
        return _INVALID


def _event_type(fn: Callable[..., Any]) -> Any:
    import typing

    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise ConfigurationError(f"Subscriber {fn.__qualname__} must take the event argument.")
    try:
        hint = typing.get_type_hints(fn).get(params[0].name)
    except Exception:
        return None
    return None if hint in (None, Any) else hint
