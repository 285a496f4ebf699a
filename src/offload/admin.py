"""Operations behind the CLI and the dashboard: load an app, inspect and repair queues.

Each function takes an open broker (or an app) and returns plain data; the CLI renders it
with rich, the dashboard as HTML and JSON. Nothing here prints.
"""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offload.app import App
from offload.brokers import Broker, open_broker
from offload.brokers.base import JobRecord, JobState, QueueStats
from offload.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

__all__ = [
    "QueueRow",
    "connect",
    "load_app",
    "queue_rows",
    "requeue_dead",
]


def load_app(path: str) -> App:
    """Import ``module:attribute`` (or ``module``, finding its one App) and return the App.

    The current directory is importable, as when running ``python -m``.

    Raises:
        ConfigurationError: the module cannot be imported or holds no App.
    """
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"Cannot import {module_name!r} ({exc}). Pass MODULE:ATTRIBUTE, e.g. myapp:app, "
            "and run from the directory that contains the module (or set PYTHONPATH)."
        ) from exc
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise ConfigurationError(f"{path!r} is not an offload App (got {type(app).__name__}).")
        return app
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise ConfigurationError(
            f"Module {module_name!r} defines {len(apps)} Apps; name one as {module_name}:NAME."
        )
    return apps[0]


@asynccontextmanager
async def connect(app: App | None, url: str | None) -> AsyncIterator[Broker]:
    """An open broker: ``url`` if given, else the app's, else ``OFFLOAD_BROKER`` or the
    default SQLite file."""
    if app is not None:
        if url:
            app.use_broker(url)
        try:
            yield await app.broker()
        finally:
            await app.close()
        return
    from offload.brokers import DEFAULT_URL

    broker = open_broker(url or os.environ.get("OFFLOAD_BROKER") or DEFAULT_URL)
    await broker.open()
    try:
        yield broker
    finally:
        await broker.close()


@dataclass(frozen=True)
class QueueRow:
    """One line of ``offload status``."""

    queue: str
    scheduled: int
    queued: int
    blocked: int
    running: int
    retrying: int
    succeeded: int
    dead: int
    cancelled: int
    oldest_pending_age_s: float | None

    @classmethod
    def from_stats(cls, s: QueueStats) -> QueueRow:
        c = s.counts
        age = None if s.oldest_pending_at is None else max(0.0, s.at - s.oldest_pending_at)
        return cls(
            s.queue,
            c.scheduled,
            c.queued,
            c.blocked,
            c.running,
            c.retrying,
            c.succeeded,
            c.dead,
            c.cancelled,
            age,
        )


async def queue_rows(broker: Broker, queues: Sequence[str] | None = None) -> list[QueueRow]:
    """Per-queue state counts (every queue when ``queues`` is None)."""
    return [QueueRow.from_stats(s) for s in await broker.stats(queues)]


async def dead_jobs(broker: Broker, queue: str | None, limit: int = 10_000) -> list[JobRecord]:
    """Dead jobs, newest first."""
    out: list[JobRecord] = []
    cursor = None
    while len(out) < limit:
        page = await broker.list_jobs(queue=queue, state=JobState.DEAD, limit=500, cursor=cursor)
        out += page.jobs
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out[:limit]


async def requeue_dead(broker: Broker, ids: Sequence[str], batch: int = 500) -> AsyncIterator[int]:
    """Requeue dead jobs in batches, yielding how many each batch moved (for progress)."""
    for i in range(0, len(ids), batch):
        yield await broker.requeue(ids[i : i + batch])


def parse_json_arg(text: str | None, kind: type, what: str) -> Any:
    """Decode a ``--args``/``--kwargs`` value, with an error that shows the expected form."""
    import msgspec

    if text is None:
        return kind()
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"{what} must be JSON ({exc}), e.g. --args '[1, \"x\"]'") from exc
    if not isinstance(value, kind):
        raise ConfigurationError(
            f"{what} must be a JSON {kind.__name__}, got {type(value).__name__}"
        )
    return value


async def enqueue_by_name(
    app: App | None,
    url: str | None,
    task: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    queue: str | None = None,
    delay: float | None = None,
    priority: int | None = None,
    wait_s: float | None = None,
) -> tuple[str, JobRecord | None]:
    """Enqueue a task by name (as another language's producer would).

    With an app that registers ``task``, its options apply; without one, the job goes to
    ``queue`` (default ``default``) as a plain envelope. Returns the job id and, if
    ``wait_s`` is given, its record once final (or when the wait ends).
    """
    app = app or App(url)
    if url and app.url != url:
        app.use_broker(url)
    try:
        if task in app.tasks:
            opts: dict[str, Any] = {"queue": queue, "delay": delay, "priority": priority}
            bound = app.tasks[task].options(**{k: v for k, v in opts.items() if v is not None})
            handle = await bound.enqueue(*args, **kwargs)
            job_id = handle.id
        else:
            job_id = await _enqueue_raw(app, task, args, kwargs, queue, delay, priority)
        record = None
        if wait_s is not None:
            record = await (await app.broker()).wait_job(job_id, wait_s)
        return job_id, record
    finally:
        await app.close()


async def _enqueue_raw(
    app: App,
    task: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue: str | None,
    delay: float | None,
    priority: int | None,
) -> str:
    from offload.flow.limits import admit
    from offload.message.envelope import Envelope
    from offload.message.ids import new_id

    now = app.clock.now()
    env = Envelope(
        id=new_id(),
        name=task,
        queue=queue or app.default_queue,
        args=args,
        kwargs=kwargs,
        priority=priority or 0,
        eta=now + delay if delay else None,
        enqueued_at=now,
    )
    broker = await app.broker()
    [out] = await admit(broker, [app.request_for(env)], app.queue_config, app._retry_after)
    return out.job_id


def describe_job(rec: JobRecord) -> str:
    """A job as readable text: state, timeline, every error with its traceback."""
    import datetime as dt

    def when(t: float | None) -> str:
        return "-" if t is None else dt.datetime.fromtimestamp(t).isoformat(sep=" ")

    lines = [
        f"job {rec.id}",
        f"  task      {rec.name}",
        f"  queue     {rec.queue}   priority {rec.priority}   key {rec.key or '-'}",
        f"  state     {rec.state.value}   attempts {rec.attempts}/{rec.max_attempts}"
        f"   recoveries {rec.recoveries}",
        f"  enqueued  {when(rec.enqueued_at)}",
        f"  due       {when(rec.run_at)}",
        f"  started   {when(rec.started_at)}",
        f"  finished  {when(rec.finished_at)}",
    ]
    if rec.progress is not None:
        lines.append(f"  progress  {rec.progress:.0%} {rec.progress_message or ''}")
    if rec.result is not None:
        lines.append(f"  result    {rec.result[:500].decode(errors='replace')}")
    for e in rec.errors:
        lines.append(f"  error (attempt {e.attempt}, {e.reason}) {e.type}: {e.message}")
        lines += ["      " + line for line in e.traceback.rstrip().splitlines()[-12:]]
    return "\n".join(lines)


async def wait_for_broker(app: App, timeout_s: float) -> None:
    """Connect the app, retrying an unreachable broker with backoff for ``timeout_s``.

    A worker often starts beside its Redis or PostgreSQL; it waits for it rather than
    failing at once, and says so.

    Raises:
        BrokerUnavailable: the broker did not answer within ``timeout_s`` (the message
            says how long it waited and what the last error was).
    """
    import asyncio
    import logging

    from offload.errors import BrokerUnavailable

    log = logging.getLogger("offload.worker")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.5
    while True:
        try:
            await app.broker()
            return
        except BrokerUnavailable as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise BrokerUnavailable(
                    f"Gave up after waiting {timeout_s:g}s for the broker to answer: {exc} "
                    "(--connect-timeout sets how long a starting worker waits)."
                ) from exc
            log.warning(
                "%s Retrying in %.1fs.",
                exc,
                min(delay, left),
                extra={"action": "broker_unavailable"},
            )
            await asyncio.sleep(min(delay, left))
            delay = min(5.0, delay * 2)
