"""The SQLite broker against the memory reference, step by step (a hypothesis state machine).

Both brokers share one :class:`FakeClock` and receive the same calls: enqueue (ids new
and reused, keys and key limits, priorities, ETAs, dedupe keys, queue bounds), claim,
extend, settle (ack, retry, bury, release, cancelled; stale deliveries included), cancel,
a crash (a delivery dropped without being settled), time passing, ``recover_expired`` and
``prune``. After every step:

* **agreement**: every call answered the same (outcomes, claimed ids in order with their
  fields, lease states, settle results, counts), and every job's record is the same;
* **one lease**: a job is claimed only when no lease of it is valid, and only the latest
  claim's lease is ever honoured (settle or extend);
* **acked is final**: a job acknowledged is never claimed again;
* **one state**: each broker's state counts equal its records, state by state.

Where the brokers differ, ``brokers/base.py`` decides who is wrong. One difference is
allowed: when a delayed job that fell due becomes ``queued`` is not a protocol rule (both
promote lazily, at a claim; memory also at a claim of ``limit=0``), so a due
``scheduled``/``retrying`` job compares as ``queued``. Error timestamps compare to
0.1 ms (see :func:`_record_view`).

The same machine also drives Redis and PostgreSQL on the shared test servers
(:func:`test_server_backends_against_memory`), with fewer programs; the differences
that are not protocol rules are switched off per backend (:data:`QUIRKS`, each flag
documented on :class:`BrokerPair`).

``OFFLOAD_FAULTS_LONG=1`` runs many more and longer programs.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from offload.brokers import open_broker
from offload.brokers.base import (
    Ack,
    Broker,
    Bury,
    Delivery,
    EnqueueRequest,
    ErrorRecord,
    JobRecord,
    JobState,
    MarkCancelled,
    Release,
    RetryLater,
    Settlement,
    StateCounts,
)
from offload.brokers.memory import MemoryBroker
from offload.clock import FakeClock
from tests.backends import BACKENDS, unavailable
from tests.faults.harness import LONG

pytestmark = pytest.mark.timeout(3600 if LONG else 300)

QUEUES = ("a", "b")


def _some(*values: Any, none: int = 0) -> st.SearchStrategy[Any]:
    """One of ``values``, or None ``none`` times as often as each of them."""
    return st.sampled_from([None] * none + list(values))


# Most requests are plain, so most jobs get to run; keys, dedupe keys and bounds are
# common enough that blocked, duplicate and full outcomes come up in every program.
requests = st.fixed_dictionaries(
    {
        # None: a fresh id; a number: an id that may exist (a duplicate, or reuse after prune)
        "id": _some(*range(20), none=60),
        "queue": st.sampled_from(QUEUES),
        "name": st.sampled_from(["t1", "t2"]),
        "priority": st.sampled_from([0, 0, 0, 5, -1]),
        "eta_in": _some(-1.0, 0.0, 0.5, 2.0, 10.0, none=10),
        "key": _some("k1", "k2", none=6),
        "key_limit": st.sampled_from([1, 1, 2]),
        "dedupe_key": _some("d1", "d2", none=10),
        "max_attempts": st.sampled_from([1, 2, 3]),
        "max_recoveries": st.sampled_from([0, 1, 3]),
        "max_depth": _some(3, 8, none=8),
        "result_ttl_s": st.sampled_from([1.0, 30.0]),
        "dead_ttl_s": st.sampled_from([1.0, 30.0]),
    }
)
SETTLE_KINDS = st.sampled_from(["ack", "ack", "retry", "bury", "release", "cancelled"])
LEASES = st.sampled_from([1.0, 5.0, 30.0])
DELAYS = st.sampled_from([0.0, 1.0, 5.0])
#: Time steps, including the lease lengths exactly (a lease ends at, not after, its expiry).
SECONDS = st.sampled_from([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 30.0, 40.0])


@dataclass
class Pair:
    """One claim of one job, as each broker delivered it."""

    mem: Delivery
    sql: Delivery
    live: bool = True  # False once settled or dropped ("crashed")
    settled: bool = False


@dataclass
class Model:
    """What the test knows independently of both brokers."""

    pairs: list[Pair] = field(default_factory=list)
    latest: dict[str, int] = field(default_factory=dict)  # job id -> index of its last claim
    lease_until: dict[str, float] = field(default_factory=dict)  # valid lease, per the model
    acked: set[str] = field(default_factory=set)


def _request(spec: dict[str, Any], now: float, n: int) -> EnqueueRequest:
    fields = dict(spec)
    eta_in = fields.pop("eta_in")
    fields["id"] = f"j{n if fields['id'] is None else fields['id']}"
    return EnqueueRequest(
        **fields,
        payload=f"payload-{n}".encode(),
        enqueued_at=now,
        eta=None if eta_in is None else now + eta_in,
    )


def _settlement(kind: str, d: Delivery, delay: float, now: float) -> Settlement:
    error = ErrorRecord(reason="exception", type="E", message=kind, attempt=d.attempts, at=now)
    if kind == "ack":
        return Ack(d, b"result" if delay else None)
    if kind == "retry":
        return RetryLater(d, delay, error)
    if kind == "bury":
        return Bury(d, error)
    if kind == "release":
        return Release(d, delay)
    return MarkCancelled(d, error if delay else None)


def _delivery_view(d: Delivery) -> tuple[Any, ...]:
    """A delivery without its lease token (each backend mints its own)."""
    fields = msgspec.structs.asdict(d)
    fields.pop("lease_token")
    return tuple(sorted(fields.items()))


def _record_view(rec: JobRecord | None, now: float) -> dict[str, Any] | None:
    if rec is None:
        return None
    view = msgspec.structs.asdict(rec)
    state = rec.state
    if state in (JobState.SCHEDULED, JobState.RETRYING) and rec.run_at <= now:
        state = JobState.QUEUED  # promotion time is not a protocol rule (module docs)
    view["state"] = state
    # SQLite writes the lease_expired error in SQL with json_object, which keeps 15
    # significant digits of a REAL: its "at" is exact to about 10 microseconds.
    view["errors"] = [{**msgspec.structs.asdict(e), "at": round(e.at, 4)} for e in rec.errors]
    return view


class BrokerPair(RuleBasedStateMachine):
    """Drives a memory broker and a ``backend`` broker with the same calls."""

    backend = "sqlite"
    #: Redis applies ``limit`` of recover_expired/prune per queue (documented in redis.py:
    #: one script per queue, run in parallel), so the machine asks it for all.
    limits_per_queue = False
    #: Redis stores a batch queue by queue: the same new id sent to two queues in one
    #: batch is stored in the queue Redis runs first, not the first one in the batch
    #: (reported; such batches are left out for it).
    batches_by_queue = False
    #: Memory and SQLite advance their round-robin start on a claim of ``limit=0``,
    #: PostgreSQL returns before it: which queue a later two-queue claim reads first is
    #: not a protocol rule, so such claims are left out for PostgreSQL.
    zero_claims = True

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.Runner()
        self.folder = Path(tempfile.mkdtemp(prefix="offload-model-"))
        self.clock = FakeClock()
        self.mem: Broker = MemoryBroker(clock=self.clock)
        self.url = BACKENDS[self.backend].make_url(self.folder, uuid.uuid4().hex[:10])
        self.other: Broker = open_broker(self.url, clock=self.clock)
        self.model = Model()
        self.known: set[str] = set()
        self.ttls: dict[str, tuple[float, float]] = {}
        self.n = 100  # fresh ids start past the ids requests reuse (j0..j19)

    def both(self, call: Any) -> tuple[Any, Any]:
        """Run ``call(broker)`` on each broker (memory first); return both answers
        (named ``mem`` and ``sql`` below, whatever the backend)."""
        return self.loop.run(call(self.mem)), self.loop.run(call(self.other))

    def teardown(self) -> None:
        try:
            self.loop.run(self.other.close())
            self.loop.run(BACKENDS[self.backend].cleanup(self.url))
            self.loop.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    @initialize()
    def open(self) -> None:
        self.loop.run(self.other.open())

    # ------------------------------------------------------------------ rules

    @rule(specs=st.lists(requests, min_size=1, max_size=5))
    def enqueue(self, specs: list[dict[str, Any]]) -> None:
        now = self.clock.now()
        if self.batches_by_queue:
            first_queue: dict[Any, str] = {}
            specs = [
                s for s in specs
                if s["id"] is None or first_queue.setdefault(s["id"], s["queue"]) == s["queue"]
            ]  # fmt: skip
        batch = [_request(s, now, self.n + i) for i, s in enumerate(specs)]
        self.n += len(batch)
        mem, sql = self.both(lambda b: b.enqueue(batch))
        assert mem == sql, f"enqueue outcomes differ: memory {mem}, {self.backend} {sql}"
        for out in mem:
            self.known.add(out.job_id)
            if out.status == "queued":
                req = next(r for r in batch if r.id == out.job_id)
                self.ttls[out.job_id] = (req.result_ttl_s, req.dead_ttl_s)
                self.model.acked.discard(out.job_id)  # a new job under a pruned job's id
                self.model.lease_until.pop(out.job_id, None)

    @rule(
        # min_size=1: with no queues, SQLite still advances its round-robin start and
        # memory does not, so later claims over two queues start from different ones
        # (harmless: which queue goes first is not a protocol rule, but it breaks the
        # step-by-step comparison).
        queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True),
        limit=st.sampled_from([0, 1, 2, 4]),
        lease_s=LEASES,
    )
    def claim(self, queues: list[str], limit: int, lease_s: float) -> None:
        if limit or self.zero_claims:
            self._claim(queues, limit, lease_s)

    @rule(
        queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True),
        limit=st.sampled_from([1, 3]),
        lease_s=LEASES,
        kinds=st.lists(SETTLE_KINDS | st.just("crash"), min_size=1, max_size=3),
        delay=DELAYS,
    )
    def work(
        self, queues: list[str], limit: int, lease_s: float, kinds: list[str], delay: float
    ) -> None:
        """A worker's turn: claim, then settle what it got (kinds taken in turn)."""
        got = self._claim(queues, limit, lease_s)
        plan = [(p, kinds[i % len(kinds)]) for i, p in enumerate(got)]
        for p, kind in plan:
            if kind == "crash":  # the worker died running it: never settled
                p.live = False
        self._settle([(p, k) for p, k in plan if k != "crash"], delay)

    def _claim(self, queues: list[str], limit: int, lease_s: float) -> list[Pair]:
        mem, sql = self.both(lambda b: b.claim(queues, "w", limit, lease_s))
        assert [_delivery_view(d) for d in mem] == [_delivery_view(d) for d in sql], (
            f"claims differ: memory {[d.job_id for d in mem]}, "
            f"{self.backend} {[d.job_id for d in sql]}"
        )
        now = self.clock.now()
        got = []
        for m, s in zip(mem, sql, strict=True):
            job = m.job_id
            assert job not in self.model.acked, f"{job} was acknowledged and claimed again"
            held = self.model.lease_until.get(job)
            assert held is None or held <= now, f"{job} claimed while its lease was valid"
            self.model.latest[job] = len(self.model.pairs)
            self.model.lease_until[job] = m.lease_expires
            self.model.pairs.append(Pair(m, s))
            got.append(self.model.pairs[-1])
        return got

    @precondition(lambda self: self.model.pairs)
    @rule(data=st.data(), lease_s=LEASES)
    def extend(self, data: st.DataObject, lease_s: float) -> None:
        picked = self._pick(data)
        if not picked:
            return
        mem, sql = self.both(
            lambda b: b.extend([p.mem if b is self.mem else p.sql for p in picked], lease_s)
        )
        assert mem == sql, f"lease states differ: memory {mem}, {self.backend} {sql}"
        assert [p.mem.lease_expires for p in picked] == [p.sql.lease_expires for p in picked]
        for p, state in zip(picked, mem, strict=True):
            if state != "lost":
                self._honoured(p)
                self.model.lease_until[p.mem.job_id] = p.mem.lease_expires

    @precondition(lambda self: self.model.pairs)
    @rule(
        data=st.data(),
        kinds=st.lists(SETTLE_KINDS, min_size=1, max_size=6),
        delay=DELAYS,
    )
    def settle(self, data: st.DataObject, kinds: list[str], delay: float) -> None:
        picked = self._pick(data, len(kinds))
        self._settle(list(zip(picked, kinds, strict=False)), delay)

    def _settle(self, plan: list[tuple[Pair, str]], delay: float) -> None:
        if not plan:
            return
        now = self.clock.now()
        mem, sql = self.both(
            lambda b: b.settle(
                [_settlement(k, p.mem if b is self.mem else p.sql, delay, now) for p, k in plan]
            )
        )
        kinds = [k for _, k in plan]
        assert mem == sql, f"settle results differ: memory {mem}, {self.backend} {sql} for {kinds}"
        for (p, kind), ok in zip(plan, mem, strict=True):
            if ok:
                self._honoured(p)
                p.live, p.settled = False, True
                self.model.lease_until.pop(p.mem.job_id, None)
                if kind == "ack":
                    self.model.acked.add(p.mem.job_id)

    @precondition(lambda self: any(p.live for p in self.model.pairs))
    @rule(data=st.data(), kind=SETTLE_KINDS | st.just("extend"))
    def settle_at_expiry(self, data: st.DataObject, kind: str) -> None:
        """The boundary of fencing: at the instant a lease ends it is no longer held."""
        p = data.draw(st.sampled_from([p for p in self.model.pairs if p.live]))
        now = self.clock.now()
        if p.mem.lease_expires < now:
            return
        self.clock.advance(p.mem.lease_expires - now)  # exact: both are near 1.8e9
        now = self.clock.now()
        if kind == "extend":
            mem, sql = self.both(lambda b: b.extend([p.mem if b is self.mem else p.sql], 5.0))
            refused: list[Any] = ["lost"]
        else:
            mem, sql = self.both(
                lambda b: b.settle([_settlement(kind, p.mem if b is self.mem else p.sql, 1, now)])
            )
            refused = [False]
        assert mem == sql == refused, f"{kind} at lease expiry: memory {mem}, {self.backend} {sql}"

    @precondition(lambda self: self.model.pairs)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A worker dies holding a delivery: it is never settled nor extended again."""
        for p in self._pick(data):
            p.live = False

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        known = sorted(self.known)
        job_ids = data.draw(st.lists(st.sampled_from([*known, "nobody"]), min_size=1, max_size=3))
        mem, sql = self.both(lambda b: b.cancel(job_ids))
        assert mem == sql, f"cancel answers differ: memory {mem}, {self.backend} {sql}"

    @rule(seconds=SECONDS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(seconds=SECONDS)
    def advance_and_recover(self, seconds: float) -> None:
        """Time passes, then a worker's maintenance loop runs."""
        self.clock.advance(seconds)
        self.recover_expired(1000)

    @rule(limit=st.sampled_from([1, 2, 1000]))
    def recover_expired(self, limit: int) -> None:
        now = self.clock.now()
        expiries = [
            r.lease_expires
            for r in self._records()
            if r.state is JobState.RUNNING and r.lease_expires is not None
            and r.lease_expires <= now
        ]  # fmt: skip
        limit = 1000 if self.limits_per_queue else _untied(limit, expiries)
        mem, sql = self.both(lambda b: b.recover_expired(limit))
        assert mem == sql, f"recovered: memory {mem}, {self.backend} {sql}"

    @rule(limit=st.sampled_from([1, 1000]))
    def prune(self, limit: int) -> None:
        now = self.clock.now()
        expiries = [e for r in self._records() if (e := self._expires_at(r)) and e <= now]
        limit = 1000 if self.limits_per_queue else _untied(limit, expiries)
        mem, sql = self.both(lambda b: b.prune(limit))
        assert mem == sql, f"pruned: memory {mem}, {self.backend} {sql}"

    # ------------------------------------------------------------------ helpers

    def _records(self) -> list[JobRecord]:
        recs = self.loop.run(self.mem.get_jobs(sorted(self.known)))
        return [r for r in recs if r is not None]

    def _expires_at(self, r: JobRecord) -> float | None:
        if not r.state.is_final or r.finished_at is None:
            return None
        result_ttl, dead_ttl = self.ttls[r.id]
        return r.finished_at + (dead_ttl if r.state is JobState.DEAD else result_ttl)

    def _pick(self, data: st.DataObject, most: int = 3) -> list[Pair]:
        """Some deliveries, mostly live ones, sometimes a stale one (fencing)."""
        if not self.model.pairs:
            return []
        live = [p for p in self.model.pairs if p.live]
        pool = live if live and data.draw(st.integers(0, 3)) else self.model.pairs
        idx = st.integers(0, len(pool) - 1)
        return [pool[i] for i in data.draw(st.lists(idx, min_size=1, max_size=most))]

    def _honoured(self, p: Pair) -> None:
        job = p.mem.job_id
        index = next(i for i, q in enumerate(self.model.pairs) if q is p)
        assert self.model.latest.get(job) == index, f"a stale lease of {job} was honoured"
        assert not p.settled, f"a delivery of {job} was honoured after it was settled"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def same_records_and_counts(self) -> None:
        ids = sorted(self.known)
        if not ids:
            return
        now = self.clock.now()
        mem, sql = self.both(lambda b: b.get_jobs(ids))
        for job, m, s in zip(ids, mem, sql, strict=True):
            assert _record_view(m, now) == _record_view(s, now), f"records of {job} differ"
        mem_stats, sql_stats = self.both(lambda b: b.stats(list(QUEUES)))
        for queue, ms, ss in zip(QUEUES, mem_stats, sql_stats, strict=True):
            for broker, stats, recs in (("memory", ms, mem), (self.backend, ss, sql)):
                states = Counter(r.state.value for r in recs if r is not None and r.queue == queue)
                assert stats.counts == StateCounts(**states), (
                    f"{broker}: counts of {queue} do not match its records"
                )
            assert ms.counts.pending == ss.counts.pending
            assert ms.oldest_pending_at == ss.oldest_pending_at
            _same_counters(queue, ms.counters, ss.counters)


def _untied(limit: int, instants: list[float]) -> int:
    """``limit``, or no limit when it would cut between equal instants: which of two jobs
    expired at the same instant goes first is not a protocol rule (memory breaks the tie
    by its random lease token or by id, SQLite by row order)."""
    ordered = sorted(instants)
    if limit < len(ordered) and ordered[limit - 1] == ordered[limit]:
        return 1000
    return limit


def _same_counters(queue: str, mem: Any, sql: Any) -> None:
    for name in mem.__struct_fields__:
        a, b = getattr(mem, name), getattr(sql, name)
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), f"{queue}.{name}: {a} != {b}"


BrokerPair.TestCase.settings = settings(
    max_examples=400 if LONG else 50,
    stateful_step_count=80 if LONG else 50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSqliteAgainstMemory = BrokerPair.TestCase


QUIRKS: dict[str, dict[str, bool]] = {
    "redis": {"limits_per_queue": True, "batches_by_queue": True},
    "postgres": {"zero_claims": False},
}


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_server_backends_against_memory(backend: str) -> None:
    """The same machine on the shared test servers (fewer programs: each opens a broker)."""
    reason = asyncio.run(BACKENDS[backend].check())
    if reason:
        unavailable(reason)
    quirks = QUIRKS[backend]
    machine = type(f"{backend.title()}Pair", (BrokerPair,), {"backend": backend, **quirks})
    run_state_machine_as_test(
        machine,
        settings=settings(
            BrokerPair.TestCase.settings,
            max_examples=200 if LONG else 15,
        ),
    )
