"""What the JSON API returns, field by field (``docs/dashboard.md`` documents each).

The HTML pages render these same structs, so a page and a script always see the same data.
Times are Unix seconds from the broker's clock; rates are per second; ``None`` means "not
measurable yet" (e.g. a rate before two samples exist).
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ActionResult",
    "ErrorView",
    "GroupView",
    "JobDetail",
    "JobList",
    "JobSummary",
    "Overview",
    "QueueView",
    "ScheduleList",
    "ScheduleView",
    "Series",
    "SeriesLine",
    "TimelineStep",
    "TopicView",
    "WorkerView",
]


class QueueView(msgspec.Struct, kw_only=True):
    """One queue: state counts and its Little's-Law figures over the recent window."""

    queue: str
    pending: int
    scheduled: int
    queued: int
    blocked: int
    running: int
    retrying: int
    succeeded: int
    dead: int
    cancelled: int
    oldest_pending_age_s: float | None
    slots: int
    window_s: float | None = None
    lam: float | None = None
    x: float | None = None
    l: float | None = None  # noqa: E741  (L, as in Little's law)
    w: float | None = None
    lam_w: float | None = None
    littles_gap: float | None = None
    utilisation: float | None = None
    wait_p95_s: float | None = None
    service_p95_s: float | None = None
    drain_s: float | None = None
    drain_note: str = ""
    wait_now_s: float | None = None
    slots_needed: float | None = None


class Overview(msgspec.Struct, kw_only=True):
    """Every queue, and what the dashboard is looking at."""

    at: float
    backend: str
    read_only: bool
    workers: int
    queues: list[QueueView]
    analytics: str


class SeriesLine(msgspec.Struct, kw_only=True):
    """One line of a chart: a label and one value per time point."""

    label: str
    values: list[float | None]


class Series(msgspec.Struct, kw_only=True):
    """Chart data sampled by the dashboard: throughput (completions/s) and depth."""

    t: list[float]
    throughput: list[SeriesLine]
    depth: list[SeriesLine]


class JobSummary(msgspec.Struct, kw_only=True):
    """One row of a job listing. ``args_preview`` is JSON, truncated."""

    id: str
    name: str
    queue: str
    kind: str
    state: str
    priority: int
    attempts: int
    max_attempts: int
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    args_preview: str
    last_error: str | None = None


class ErrorView(msgspec.Struct, kw_only=True):
    """One failed attempt: reason code, exception type and message, traceback."""

    attempt: int
    reason: str
    type: str
    message: str
    traceback: str
    at: float
    worker_id: str


class TimelineStep(msgspec.Struct, kw_only=True):
    """A step of a job's life and the seconds since the previous step."""

    label: str
    at: float
    after_s: float | None


class JobDetail(msgspec.Struct, kw_only=True):
    """Everything about one job. Arguments, kwargs and result are JSON text, truncated
    at ``limit`` characters (``truncated`` says whether anything was cut)."""

    job: JobSummary
    key: str | None
    dedupe_key: str | None
    recoveries: int
    run_at: float
    args: str
    kwargs: str
    headers: dict[str, str]
    result: str | None
    truncated: bool
    decode_error: str | None
    errors: list[ErrorView]
    timeline: list[TimelineStep]
    progress: float | None
    progress_message: str | None
    cancel_requested: bool
    worker_id: str | None
    lease_expires: float | None
    can_requeue: bool
    can_delete: bool
    can_cancel: bool


class JobList(msgspec.Struct, kw_only=True):
    """A page of jobs, newest first; pass ``next_cursor`` back as ``cursor``."""

    jobs: list[JobSummary]
    next_cursor: str | None


class WorkerView(msgspec.Struct, kw_only=True):
    """A live worker process and the jobs it holds."""

    id: str
    hostname: str
    pid: int
    supervisor_pid: int | None
    state: str
    queues: list[str]
    concurrency: int
    running: list[str]
    processed: int
    failed: int
    started_at: float
    last_seen: float
    seen_ago_s: float
    version: str


class GroupView(msgspec.Struct, kw_only=True):
    """A subscriber group: ``lag`` is events delivered to it and not yet handled."""

    group: str
    queue: str
    lag: int
    running: int
    dead: int
    created_at: float


class TopicView(msgspec.Struct, kw_only=True):
    """A topic's retained log and its groups."""

    name: str
    first_offset: int | None
    last_offset: int | None
    retained: int
    retention_s: float | None
    max_events: int | None
    groups: list[GroupView]


class ScheduleView(msgspec.Struct, kw_only=True):
    """A schedule: what it runs, when it last ran (and that tick's job), when it runs next,
    and its missed-tick policy."""

    name: str
    task: str
    queue: str
    trigger: str
    misfire: str
    next_run: float | None
    last_run: float | None
    last_job_id: str | None
    skipped: int


class ScheduleList(msgspec.Struct, kw_only=True):
    """The app's schedules (``available`` is False when the app cannot have any)."""

    available: bool
    schedules: list[ScheduleView]


class ActionResult(msgspec.Struct, kw_only=True):
    """What a requeue, delete or cancel changed."""

    action: str
    requested: int
    changed: int
