"""The broker protocol: storage and delivery, the same on every backend.

A broker keeps jobs and hands them out under fenced leases. It never decodes a payload:
it reads only the routing fields given beside it (queue, priority, eta, key, dedupe key,
attempt limits), so a poison message cannot crash it.

The protocol is cut into small groups so each caller depends on what it uses:

- :class:`Lifecycle`: ``open``/``close``, capabilities.
- :class:`QueueOps`: enqueue, claim, extend, settle (ack / retry / bury / release /
  cancelled), recover expired leases, prune, cancel, progress.
- :class:`ResultOps`: read job records, wait for one to finish.
- :class:`TopicOps`: topics as retained logs fanned out to subscriber groups.
- :class:`CoordinationOps`: named leases, token buckets, a small key-value store,
  the live worker registry.
- :class:`InspectionOps`: counts and Little's-Law counters, listings, requeue, purge.

Batch first: ``enqueue``, ``claim``, ``extend`` and ``settle`` take and return lists, and
a backend does each batch in one round trip or transaction. The single-item helpers on
:class:`BrokerBase` (``ack``, ``retry``, ``bury``, ``release``) are batches of one.

Key semantics every backend keeps (``tests/conformance`` states each as a test):

* **Keys.** Keys and dedupe keys are scoped to their queue (so everything one queue
  needs lives together: one Redis Cluster slot, one index). A job with ``key`` shares a
  slot pool of size ``key_limit`` with the other unfinished jobs of that key. When the
  pool is full the job enters ``blocked`` and waits in enqueue order; when a job of the
  key ends (succeeded, dead or cancelled) the oldest blocked one moves on. A job waiting
  for its retry keeps its slot, so with ``key_limit=1`` jobs of one key run one at a
  time, strictly in enqueue order.
* **Fencing.** ``claim`` gives each delivery a fresh ``lease_token``. ``extend`` and
  every settlement succeed only while the job is running under that token *and* the lease
  has not expired; otherwise they change nothing and report ``False`` / ``lost``.
* **Recovery.** ``recover_expired`` returns running jobs whose lease expired to
  ``queued``; after ``max_recoveries`` such recoveries a job goes to ``dead`` with reason
  ``lease_expired`` so a job that kills its worker cannot do so forever.
* **Attempts.** ``claim`` counts an attempt; ``release`` gives it back.
* **Dedupe.** A ``dedupe_key`` is unique among the queue's unfinished jobs; a job ``id``
  is unique while the record exists (until pruned after its TTL). Either collision returns
  ``duplicate`` with the existing id.
* **Bounds.** ``max_depth`` on a request bounds the queue's pending jobs (scheduled,
  queued, blocked, retrying); the check and the insert are one atomic step.
* **Time.** Instants that are stored or compared (ETAs, lease expiries, timestamps,
  TTLs) come from the broker's injected clock, so tests drive them with a fake clock.
  Durations a call waits for (``wait_s``, ``timeout_s``) are real time.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, Self, TypeAlias, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = [
    "STATS_EPOCH",
    "Ack",
    "Broker",
    "BrokerBase",
    "Bury",
    "Capabilities",
    "CoordinationOps",
    "Counters",
    "Delivery",
    "EnqueueOutcome",
    "EnqueueRequest",
    "ErrorRecord",
    "EventRequest",
    "GroupInfo",
    "GroupSpec",
    "InspectionOps",
    "JobPage",
    "JobRecord",
    "JobState",
    "LeaseState",
    "Lifecycle",
    "MarkCancelled",
    "QueueOps",
    "QueueStats",
    "Release",
    "ResultOps",
    "RetryLater",
    "Settlement",
    "StateCounts",
    "Timing",
    "TopicInfo",
    "TopicOps",
    "TopicSpec",
    "WorkerInfo",
    "group_queue",
    "redact_url",
]

#: Counter sums of timestamps are kept relative to this instant (2023-11-14) so the sums
#: stay small enough for float64 to keep millisecond precision.
STATS_EPOCH = 1_700_000_000.0

DAY = 86_400.0


class JobState(enum.StrEnum):
    """Where a job is in its life.

    ``scheduled -> queued -> running -> succeeded``, or after a failure
    ``running -> retrying -> queued`` until the attempts are used up, then ``dead``.
    ``blocked`` jobs wait behind earlier jobs of the same key. ``cancelled`` can follow
    any state that is not yet final.
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    BLOCKED = "blocked"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for succeeded, dead and cancelled."""
        return self in _FINAL

    @property
    def is_pending(self) -> bool:
        """True for jobs that wait to run: scheduled, queued, blocked, retrying."""
        return self in _PENDING


_FINAL = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
_PENDING = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.BLOCKED, JobState.RETRYING})


class LeaseState(enum.StrEnum):
    """What ``extend`` found for one delivery."""

    OK = "ok"
    LOST = "lost"
    CANCEL_REQUESTED = "cancel_requested"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, declared rather than discovered by exception.

    Attributes:
        name: the backend's name, as in the URL scheme.
        durable: acknowledged enqueues survive a process crash.
        shared: several processes (or machines) can use the same store at once.
        push_wakeups: idle claims and result waits wake on a notification, not a poll.
        transactional_enqueue: enqueue can join the caller's database transaction.
        multi_machine: workers on other machines can share the store.
    """

    name: str
    durable: bool
    shared: bool
    push_wakeups: bool
    transactional_enqueue: bool = False
    multi_machine: bool = False


class EnqueueRequest(msgspec.Struct, kw_only=True):
    """One job to store: the opaque payload plus the routing fields the broker reads."""

    id: str
    queue: str
    name: str
    payload: bytes
    enqueued_at: float
    kind: Literal["job", "event"] = "job"
    priority: int = 0
    eta: float | None = None
    key: str | None = None
    key_limit: int = 1
    dedupe_key: str | None = None
    max_attempts: int = 1
    max_recoveries: int = 3
    max_depth: int | None = None
    result_ttl_s: float = DAY
    dead_ttl_s: float = 7 * DAY


class EnqueueOutcome(msgspec.Struct, frozen=True):
    """What happened to one enqueue request.

    ``status`` is ``queued`` (stored; ``job_id`` is the new id), ``duplicate`` (an
    unfinished job holds the dedupe key, or the id exists; ``job_id`` is that job's id)
    or ``full`` (the queue is at ``max_depth``; ``depth`` is its pending count).
    """

    status: Literal["queued", "duplicate", "full"]
    job_id: str
    depth: int = 0


class Delivery(msgspec.Struct, kw_only=True):
    """A claimed job, held under a fenced lease until it is settled."""

    job_id: str
    queue: str
    name: str
    kind: Literal["job", "event"]
    payload: bytes
    attempts: int
    max_attempts: int
    recoveries: int
    lease_token: int
    lease_expires: float
    enqueued_at: float
    priority: int = 0
    key: str | None = None


class ErrorRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One failure of one attempt, kept with the job.

    ``reason`` is a short code: ``exception``, ``timeout``, ``unknown_task``,
    ``decode_error``, ``payload_too_large``, ``bad_arguments``, ``lease_expired``,
    ``lease_lost``, ``shutdown``, ``cancelled``, ``result_not_serializable``,
    ``bad_follow_up``.
    """

    reason: str
    type: str = ""
    message: str = ""
    traceback: str = ""
    attempt: int = 0
    at: float = 0.0
    worker_id: str = ""


class Ack(msgspec.Struct):
    """Settle a delivery as succeeded, storing ``result``.

    ``follow_ups`` are enqueued in the same atomic step (bypassing ``max_depth``), so the
    next step of a workflow exists if and only if this step is recorded as done.
    """

    delivery: Delivery
    result: bytes | None = None
    follow_ups: Sequence[EnqueueRequest] = ()


class RetryLater(msgspec.Struct):
    """Settle a failed attempt: the job waits ``delay_s`` in ``retrying``, then runs again."""

    delivery: Delivery
    delay_s: float
    error: ErrorRecord


class Bury(msgspec.Struct):
    """Settle a delivery as dead, into the dead-letter store, with the error that killed it.

    ``follow_ups`` (on-failure callbacks) are enqueued in the same atomic step.
    """

    delivery: Delivery
    error: ErrorRecord
    follow_ups: Sequence[EnqueueRequest] = ()


class Release(msgspec.Struct):
    """Give a delivery back unrun: queued again (after ``delay_s``), its attempt not counted."""

    delivery: Delivery
    delay_s: float = 0.0


class MarkCancelled(msgspec.Struct):
    """Settle a running delivery that stopped because it was cancelled."""

    delivery: Delivery
    error: ErrorRecord | None = None


Settlement: TypeAlias = Ack | RetryLater | Bury | Release | MarkCancelled


class JobRecord(msgspec.Struct, kw_only=True):
    """Everything stored about one job (for results, status and inspection)."""

    id: str
    queue: str
    name: str
    kind: Literal["job", "event"]
    state: JobState
    payload: bytes
    priority: int = 0
    key: str | None = None
    dedupe_key: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    recoveries: int = 0
    enqueued_at: float = 0.0
    run_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    errors: list[ErrorRecord] = msgspec.field(default_factory=list)
    progress: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    worker_id: str | None = None
    lease_expires: float | None = None


class JobPage(msgspec.Struct):
    """A page of job records, newest first; pass ``next_cursor`` back for the next page."""

    jobs: list[JobRecord]
    next_cursor: str | None = None


class StateCounts(msgspec.Struct, kw_only=True):
    """How many jobs of a queue are in each state right now."""

    scheduled: int = 0
    queued: int = 0
    blocked: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    dead: int = 0
    cancelled: int = 0

    @property
    def pending(self) -> int:
        """Jobs waiting to run: what a queue bound (``max_depth``) counts."""
        return self.scheduled + self.queued + self.blocked + self.retrying


class Counters(msgspec.Struct, kw_only=True):
    """Cumulative counters, the raw material of Little's-Law analytics.

    Sample them twice and divide the differences by the elapsed time: arrivals
    ``enqueued``, completions ``succeeded + dead + cancelled``, busy time ``service_s``,
    and the area under the jobs-in-system curve from :meth:`area`.

    Attributes:
        enqueued: jobs that entered the queue.
        started: attempts started (claims).
        waited: first attempts started; ``wait_s`` sums their wait after being due.
        succeeded, dead, cancelled: jobs that reached each final state.
        retried: failed attempts that were scheduled to run again.
        recovered: expired leases returned to the queue (crashed or hung workers).
        service_s: seconds spent running attempts that reported an outcome.
        system_s: seconds from enqueue to the final state, summed over finished jobs.
        in_system: jobs enqueued and not yet final.
        in_system_enq_s: sum of ``enqueued_at - STATS_EPOCH`` over those jobs.
    """

    enqueued: int = 0
    started: int = 0
    waited: int = 0
    succeeded: int = 0
    dead: int = 0
    cancelled: int = 0
    retried: int = 0
    recovered: int = 0
    wait_s: float = 0.0
    service_s: float = 0.0
    system_s: float = 0.0
    in_system: int = 0
    in_system_enq_s: float = 0.0

    @property
    def finished(self) -> int:
        """Jobs that reached a final state."""
        return self.succeeded + self.dead + self.cancelled

    def area(self, now: float) -> float:
        """Job-seconds spent in the system up to ``now`` (the integral of L(t) dt)."""
        return self.system_s + self.in_system * (now - STATS_EPOCH) - self.in_system_enq_s

    def __add__(self, other: Counters) -> Counters:
        fields = self.__struct_fields__
        return Counters(**{f: getattr(self, f) + getattr(other, f) for f in fields})


class QueueStats(msgspec.Struct, kw_only=True):
    """A snapshot of one queue: state counts, totals, and counters per task name."""

    queue: str
    at: float
    counts: StateCounts
    counters: Counters
    by_task: dict[str, Counters] = msgspec.field(default_factory=dict)
    oldest_pending_at: float | None = None


class Timing(msgspec.Struct, frozen=True):
    """When one finished job was enqueued, became due, started and finished."""

    name: str
    state: JobState
    enqueued_at: float
    run_at: float
    started_at: float
    finished_at: float


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A topic's retention: events older than ``retention_s`` or beyond the newest
    ``max_events`` may be pruned (``None``: no limit of that kind)."""

    name: str
    retention_s: float | None = 7 * DAY
    max_events: int | None = None


class GroupSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A subscriber group of a topic and how its deliveries behave.

    Deliveries for the group are ordinary jobs in the queue :func:`group_queue`
    ``(topic, group)`` with ``kind="event"`` and the job id ``<event id>:<group>`` (a
    replay or a backfill adds a suffix); an event's key becomes the job key, scoped
    to the group (keys are per queue), so order per key holds within each group.
    """

    topic: str
    group: str
    from_start: bool = False
    max_attempts: int = 1
    max_recoveries: int = 3
    result_ttl_s: float = 3_600.0
    dead_ttl_s: float = 7 * DAY


class EventRequest(msgspec.Struct, kw_only=True):
    """One event to append to a topic.

    ``key`` orders the event's deliveries in every group; ``group_keys`` overrides it for
    the groups named (a subscriber may order by its own key, e.g. the customer id).
    """

    id: str
    payload: bytes
    published_at: float
    key: str | None = None
    group_keys: dict[str, str] = msgspec.field(default_factory=dict)


class GroupInfo(msgspec.Struct, kw_only=True):
    """A group's place in its topic."""

    group: str
    queue: str
    created_at: float
    from_start: bool


class TopicInfo(msgspec.Struct, kw_only=True):
    """A topic's log: offsets kept, and its groups."""

    name: str
    first_offset: int | None
    last_offset: int | None
    retained: int
    groups: list[GroupInfo]
    retention_s: float | None = None
    max_events: int | None = None


class WorkerInfo(msgspec.Struct, kw_only=True):
    """A live worker process as it last reported itself."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: float
    last_seen: float = 0.0
    state: str = "running"
    running: list[str] = msgspec.field(default_factory=list)
    processed: int = 0
    failed: int = 0
    version: str = ""
    supervisor_pid: int | None = None


def group_queue(topic: str, group: str) -> str:
    """The queue that holds ``group``'s deliveries of ``topic``: ``group@topic``."""
    return f"{group}@{topic}"


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class Lifecycle(Protocol):
    """Opening and closing a broker."""

    url: str
    capabilities: Capabilities

    async def open(self) -> None:
        """Connect, create or check the schema. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""


class QueueOps(Protocol):
    """Storing jobs and handing them out under leases."""

    async def enqueue(self, requests: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        """Store jobs; each request is atomic on its own (see module docs for outcomes)."""

    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_s: float,
        wait_s: float = 0.0,
    ) -> list[Delivery]:
        """Take up to ``limit`` due jobs, highest priority first, FIFO within a priority.

        Returns as soon as at least one is available, or after ``wait_s`` with none.
        Jobs move to ``running`` with ``attempts += 1`` and a lease of ``lease_s``.
        Cancelling the call never loses a job: one claimed meanwhile returns after its
        lease.
        """

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[LeaseState]:
        """Renew leases by ``lease_s`` from now; report lost leases and cancel requests."""

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Record outcomes; each is ``False`` (and changes nothing) if its lease is gone."""

    async def ack(self, delivery: Delivery, result: bytes | None = None) -> bool:
        """Settle one delivery as succeeded (a batch of one)."""

    async def retry(self, delivery: Delivery, delay_s: float, error: ErrorRecord) -> bool:
        """Settle one failed attempt for a later retry (a batch of one)."""

    async def bury(self, delivery: Delivery, error: ErrorRecord) -> bool:
        """Settle one delivery into the dead-letter store (a batch of one)."""

    async def release(self, delivery: Delivery, delay_s: float = 0.0) -> bool:
        """Give one delivery back without counting its attempt (a batch of one)."""

    async def recover_expired(self, limit: int = 1000) -> int:
        """Return expired leases to ``queued`` (or ``dead``); safe to run anywhere."""

    async def prune(self, limit: int = 1000) -> int:
        """Delete final jobs past their TTL and events past their topic's retention."""

    async def cancel(self, job_ids: Sequence[str]) -> list[JobState | None]:
        """Cancel pending jobs at once; flag running ones (seen by ``extend``).

        Returns each job's state afterwards, ``None`` for unknown ids.
        """

    async def set_progress(self, delivery: Delivery, value: float, message: str | None) -> bool:
        """Record a running job's progress (fenced like a settlement)."""


class ResultOps(Protocol):
    """Reading job records and waiting for results."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The record of one job, or ``None`` (a batch of one of ``get_jobs``)."""

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """The records of these jobs, ``None`` for unknown ids."""

    async def wait_job(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Wait until the job is final or ``timeout_s`` passed; return its record then."""


class TopicOps(Protocol):
    """Topics: retained logs fanned out to subscriber groups."""

    async def ensure_topic(self, topic: TopicSpec, groups: Sequence[GroupSpec]) -> None:
        """Create or update a topic and its groups. A new group with ``from_start``
        receives the retained log; otherwise it starts with the next event."""

    async def publish(self, topic: str, events: Sequence[EventRequest]) -> list[int]:
        """Append events (atomically with one delivery per group); return their offsets."""

    async def replay(
        self,
        topic: str,
        group: str,
        from_offset: int | None = None,
        from_time: float | None = None,
    ) -> int:
        """Deliver again to ``group`` every retained event from an offset or a time."""

    async def topics(self) -> list[TopicInfo]:
        """Every topic with its retained range and its groups."""


class CoordinationOps(Protocol):
    """Small primitives for distributed coordination."""

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew a named lease; ``False`` while another owner holds it."""

    async def release_lease(self, name: str, owner: str) -> bool:
        """Give a named lease up, if ``owner`` holds it."""

    async def take_tokens(self, bucket: str, rate: float, burst: float, n: float = 1.0) -> float:
        """Token bucket refilled at ``rate``/s up to ``burst``.

        Returns 0.0 and takes ``n`` tokens if there are enough, else returns the seconds
        until there will be and takes nothing.
        """

    async def kv_get(self, key: str) -> bytes | None:
        """A stored value, or ``None``."""

    async def kv_set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store a value (expiring after ``ttl_s``)."""

    async def register_worker(self, info: WorkerInfo, ttl_s: float) -> None:
        """Record a worker as alive for ``ttl_s`` seconds."""

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""

    async def workers(self) -> list[WorkerInfo]:
        """Workers seen within their TTL."""


class InspectionOps(Protocol):
    """Reading and repairing the store, for the CLI, the dashboard and metrics."""

    async def queues(self) -> list[str]:
        """Every queue that holds or held jobs."""

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts and counters per queue (all known queues when ``None``)."""

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs matching the filters, newest first."""

    async def timings(self, queue: str, since: float, limit: int = 1000) -> list[Timing]:
        """Finished jobs of a queue since ``since``, newest first (for percentiles)."""

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Move dead or cancelled jobs back to ``queued`` with fresh attempts."""

    async def delete(self, job_ids: Sequence[str]) -> int:
        """Delete jobs that are not running."""

    async def purge(self, queue: str, states: Sequence[JobState] | None = None) -> int:
        """Delete a queue's jobs in ``states`` (default: every pending state)."""


class Broker(Lifecycle, QueueOps, ResultOps, TopicOps, CoordinationOps, InspectionOps, Protocol):
    """The whole protocol."""


# --------------------------------------------------------------------------- base class


class BrokerBase(abc.ABC):
    """Shared conveniences; backends subclass this and implement :class:`Broker`.

    The single-delivery helpers are batches of one, so a backend implements each
    operation once.
    """

    url: str
    capabilities: Capabilities

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or check the schema. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abc.abstractmethod
    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Record outcomes (see :class:`QueueOps`)."""

    @abc.abstractmethod
    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """The records of these jobs (see :class:`ResultOps`)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ack(self, delivery: Delivery, result: bytes | None = None) -> bool:
        """Settle one delivery as succeeded."""
        return (await self.settle([Ack(delivery, result)]))[0]

    async def retry(self, delivery: Delivery, delay_s: float, error: ErrorRecord) -> bool:
        """Settle one failed attempt for a later retry."""
        return (await self.settle([RetryLater(delivery, delay_s, error)]))[0]

    async def bury(self, delivery: Delivery, error: ErrorRecord) -> bool:
        """Settle one delivery into the dead-letter store."""
        return (await self.settle([Bury(delivery, error)]))[0]

    async def release(self, delivery: Delivery, delay_s: float = 0.0) -> bool:
        """Give one delivery back without counting its attempt."""
        return (await self.settle([Release(delivery, delay_s)]))[0]

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The record of one job, or ``None``."""
        return (await self.get_jobs([job_id]))[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self.url)}>"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and errors)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _pw = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
