"""The SQLite broker's job operations: the bodies of its write transactions.

Each public method runs inside one ``BEGIN IMMEDIATE`` transaction opened by
:meth:`Database.write` and records every state change in a :class:`Tally`, which the
caller flushes into ``stats`` before the commit. The statements live in
``sqlite_sql/queries.sql``; this module only sequences them and turns rows into protocol
objects. It runs on the broker's database thread, never on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offload.brokers._sqlite_rows import (
    NULL,
    blob,
    delivery_of,
    error_json,
    id_hash,
    ids_json,
    record_of,
    seq_of,
)
from offload.brokers._sqlite_tally import RECOVERED, RETRIED, SERVICE_S, STARTED, WAIT_S, WAITED
from offload.brokers.base import (
    Ack,
    Bury,
    Delivery,
    EnqueueOutcome,
    JobRecord,
    JobState,
    LeaseState,
    Release,
    RetryLater,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.brokers._sqlite_db import Database, Queries
    from offload.brokers._sqlite_tally import Tally
    from offload.brokers.base import EnqueueRequest, Settlement

__all__ = ["FINAL", "PENDING", "JobStore"]

PENDING = frozenset({"scheduled", "queued", "blocked", "retrying"})
FINAL = frozenset({"succeeded", "dead", "cancelled"})
#: Due delayed jobs promoted per claim: bounds one transaction when a huge batch falls due
#: at once (the rest follow on the next claims, oldest due first).
PROMOTE_LIMIT = 5000
_BLOCKED_BATCH = 100
#: Below this many acks, one UPDATE per ack is cheaper than the set-based statement.
_ACK_BATCH_MIN = 4
#: Set-based acks bind this many rows at most per statement; smaller batches are padded to
#: a power of two with rows that match nothing, so a handful of statements stay cached.
_ACK_CHUNK = 128
_NO_ACK = (-1, "", 0, 0)
_LEASE_EXPIRED = "the worker stopped renewing its lease (crashed, killed or hung)"

Keys = set[tuple[str, str]]


class _Admission:
    """What one enqueue batch knows about its queues, loaded lazily and kept current."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.holders: dict[tuple[str, str], str | None] = {}
        self.pending: dict[str, int] = {}
        self.added: dict[str, int] = {}
        self.slots: dict[tuple[str, str], list[int]] = {}

    def holder(self, queue: str, dedupe_key: str) -> str | None:
        k = (queue, dedupe_key)
        if k not in self.holders:
            row = self.store.con.execute(self.store.q.dedupe_holder, k).fetchone()
            self.holders[k] = row[0] if row else None
        return self.holders[k]

    def depth(self, queue: str) -> int:
        if queue not in self.pending:
            row = self.store.con.execute(self.store.q.queue_pending, (queue,)).fetchone()
            self.pending[queue] = int(row[0])  # stats do not count this batch yet
        return self.pending[queue] + self.added.get(queue, 0)

    def keyed_state(self, queue: str, key: str, key_limit: int, placed: str) -> str:
        slot = self.slots.get((queue, key))
        if slot is None:
            row = self.store.con.execute(self.store.q.key_slots, (queue, key)).fetchone()
            slot = self.slots[queue, key] = [int(row[0]), int(row[1])]
        if slot[0] >= max(1, key_limit) or slot[1]:
            slot[1] += 1
            return "blocked"
        slot[0] += 1
        return placed

    def admitted(self, req: EnqueueRequest) -> None:
        self.added[req.queue] = self.added.get(req.queue, 0) + 1
        if req.dedupe_key is not None:
            self.holders[req.queue, req.dedupe_key] = req.id


class JobStore:
    """Job operations over one :class:`Database` connection."""

    def __init__(self, db: Database, queries: Queries) -> None:
        self.db = db
        self.con = db.con
        self.cur = db.con.cursor()
        self.q = queries
        self._ack_sql: dict[int, str] = {}
        #: Blocked jobs moved into a free key slot, ever (the broker watches it change).
        self.unblocked = 0

    # ------------------------------------------------------------------ enqueue

    def enqueue(
        self, tally: Tally, now: float, requests: Sequence[EnqueueRequest], *, bounded: bool
    ) -> list[EnqueueOutcome]:
        """Store jobs; each gets its own outcome (duplicate / full / queued)."""
        if not requests:
            return []
        hashes = [id_hash(r.id) for r in requests]
        pairs = ids_json([r.id for r in requests], hashes)
        seen = {r[0] for r in self.con.execute(self.q.existing_ids, (pairs,))}
        adm = _Admission(self)
        rows: list[tuple[Any, ...]] = []
        out = []
        for req, h in zip(requests, hashes, strict=True):
            outcome = self._refusal(req, seen, adm, bounded)
            if outcome is None:
                rows.append(self._admit(tally, now, req, h, adm))
                seen.add(req.id)
                outcome = EnqueueOutcome("queued", req.id)
            out.append(outcome)
        self.cur.executemany(self.q.insert_job, rows)
        return out

    @staticmethod
    def _refusal(
        req: EnqueueRequest, seen: set[str], adm: _Admission, bounded: bool
    ) -> EnqueueOutcome | None:
        if req.id in seen:
            return EnqueueOutcome("duplicate", req.id)
        if req.dedupe_key is not None:
            holder = adm.holder(req.queue, req.dedupe_key)
            if holder is not None:
                return EnqueueOutcome("duplicate", holder)
        if bounded and req.max_depth is not None:
            depth = adm.depth(req.queue)
            if depth >= req.max_depth:
                return EnqueueOutcome("full", req.id, depth)
        return None

    @staticmethod
    def _admit(
        tally: Tally, now: float, req: EnqueueRequest, h: int, adm: _Admission
    ) -> tuple[Any, ...]:
        run_at = req.eta if req.eta is not None else req.enqueued_at
        state = "scheduled" if run_at > now else "queued"
        if req.key is not None:
            state = adm.keyed_state(req.queue, req.key, req.key_limit, state)
        adm.admitted(req)
        tally.admitted(req.queue, req.name, state, req.enqueued_at)
        return (
            req.id,
            req.queue,
            state,
            req.priority,
            run_at,
            req.name,
            req.kind,
            req.enqueued_at,
            max(run_at, req.enqueued_at),
            NULL if req.key is None else req.key,
            max(1, req.key_limit),
            NULL if req.dedupe_key is None else req.dedupe_key,
            req.max_attempts,
            req.max_recoveries,
            req.result_ttl_s,
            req.dead_ttl_s,
            bytearray(req.payload),
            h,
        )

    # ------------------------------------------------------------------ claim

    def has_work(self, queues: Sequence[str], now: float) -> bool:
        """Read-only: is anything claimable (or due) in these queues? Takes no write lock."""
        cur = self.cur
        for queue in queues:
            if cur.execute(self.q.queue_has_work, (queue,)).fetchone()[0]:
                return True
        return bool(cur.execute(self.q.any_due, (now,)).fetchone()[0])

    def next_due(self) -> float | None:
        """When the next delayed job (of any queue) falls due."""
        dues = [t for t in self.cur.execute(self.q.next_due).fetchone() if t is not None]
        return min(dues) if dues else None

    def promote_due(self, tally: Tally, now: float) -> None:
        """Due scheduled and retrying jobs become queued."""
        for sql, old in (
            (self.q.promote_scheduled, "scheduled"),
            (self.q.promote_retrying, "retrying"),
        ):
            for queue, name in self.con.execute(sql, (now, PROMOTE_LIMIT)).fetchall():
                tally.move(queue, name, old, "queued")

    def claim(
        self,
        tally: Tally,
        now: float,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_s: float,
        start: int,
    ) -> list[Delivery]:
        """Start up to ``limit`` jobs, taking the queues in turn from ``queues[start]``."""
        self.promote_due(tally, now)
        out: list[Delivery] = []
        expires = now + lease_s
        n = len(queues)
        for i in range(n):
            want = limit - len(out)
            if want <= 0:
                break
            queue = queues[(start + i) % n]
            rows = self.cur.execute(self.q.claim, (queue, now, expires, worker_id, want)).fetchall()
            if rows:
                rows.sort(key=_claim_order)
                out += self._started(tally, now, queue, expires, rows)
        return out

    @staticmethod
    def _started(
        tally: Tally, now: float, queue: str, expires: float, rows: list[Any]
    ) -> list[Delivery]:
        out = []
        for row in rows:
            r = tally.row(queue, row[2])
            r[1] -= 1  # n_queued
            r[3] += 1  # n_running
            r[STARTED] += 1
            if row[13] == 1:  # the first claim since (re)queued ends the job's wait
                r[WAITED] += 1
                r[WAIT_S] += max(0.0, now - row[14])
            out.append(delivery_of(row, queue, expires))
        return out

    # ------------------------------------------------------------------ leases

    def extend(
        self, now: float, deliveries: Sequence[Delivery], lease_s: float
    ) -> list[tuple[LeaseState, float]]:
        """Renew fenced leases; each answer carries the new expiry."""
        expires = now + lease_s
        out = []
        for d in deliveries:
            row = self.cur.execute(
                self.q.extend, (d.job_id, d.lease_token, now, expires, seq_of(d))
            ).fetchone()
            if row is None:
                out.append((LeaseState.LOST, d.lease_expires))
            else:
                out.append((LeaseState.CANCEL_REQUESTED if row[0] else LeaseState.OK, expires))
        return out

    def set_progress(self, now: float, d: Delivery, value: float, message: str | None) -> bool:
        """Record progress while the lease holds."""
        self.cur.execute(
            self.q.set_progress,
            (d.job_id, d.lease_token, now, value, message, seq_of(d)),
        )
        return self.cur.rowcount == 1

    # ------------------------------------------------------------------ settle

    def settle(self, tally: Tally, now: float, settlements: Sequence[Settlement]) -> list[bool]:
        """Record outcomes, each fenced on its own; frees key slots once per batch."""
        keys: Keys = set()
        if _plain_acks(settlements):
            out = self._ack_batch(tally, now, settlements, keys)
        else:
            out = [self._settle_one(tally, now, s, keys) for s in settlements]
        if keys:
            self.release_keys(tally, now, keys)
        return out

    def _ack_batch(
        self, tally: Tally, now: float, acks: Sequence[Settlement], keys: Keys
    ) -> list[bool]:
        """A batch of plain acks as set-based statements (the worker's common case)."""
        rows: list[Any] = []
        for i in range(0, len(acks), _ACK_CHUNK):
            chunk = acks[i : i + _ACK_CHUNK]
            size = max(_ACK_BATCH_MIN, 1 << (len(chunk) - 1).bit_length())
            params: list[Any] = [now]
            for s in chunk:
                d = s.delivery
                params += (seq_of(d), d.job_id, d.lease_token, blob(s.result))  # type: ignore[union-attr]
            params += _NO_ACK * (size - len(chunk))  # pad to a cached statement size
            rows += self.cur.execute(self._ack_statement(size), params).fetchall()
        for _id, queue, name, key, enqueued_at, started_at in rows:
            tally.row(queue, name)[SERVICE_S] += now - started_at
            tally.finished(queue, name, "running", "succeeded", enqueued_at, now)
            if key is not None:
                keys.add((queue, key))
        done = {r[0] for r in rows}
        return [s.delivery.job_id in done for s in acks]

    def _ack_statement(self, size: int) -> str:
        sql = self._ack_sql.get(size)
        if sql is None:
            values = ", ".join(["(?, ?, ?, ?)"] * size)
            sql = self._ack_sql[size] = self.q.ack_batch.replace(
                "(VALUES (?batch))", f"(VALUES {values})"
            )
        return sql

    def _settle_one(self, tally: Tally, now: float, s: Settlement, keys: Keys) -> bool:
        d = s.delivery
        head = (d.job_id, d.lease_token, now)
        h = seq_of(d)
        cur, q = self.cur, self.q
        if isinstance(s, Release):
            row = cur.execute(q.release, (*head, now + s.delay_s, h)).fetchone()
            if row is not None:
                placed = "scheduled" if now + s.delay_s > now else "queued"
                tally.move(row[0], row[1], "running", placed)
            return row is not None
        if isinstance(s, Ack):
            row = cur.execute(q.ack, (*head, blob(s.result), h)).fetchone()
            final = "succeeded"
        elif isinstance(s, RetryLater):
            error = error_json(s.error)
            row = cur.execute(q.retry, (*head, now + s.delay_s, error, h)).fetchone()
            final = "retrying"
        else:
            final = "dead" if isinstance(s, Bury) else "cancelled"
            error = error_json(s.error)
            row = cur.execute(q.finish_running, (*head, final, error, h)).fetchone()
        if row is None:
            return False
        self._settled(tally, now, s, final, row, keys)
        return True

    def _settled(
        self, tally: Tally, now: float, s: Settlement, final: str, row: Any, keys: Keys
    ) -> None:
        queue, name, key, enqueued_at, started_at = row
        tally.row(queue, name)[SERVICE_S] += now - (started_at if started_at is not None else now)
        if final == "retrying":
            tally.move(queue, name, "running", "retrying")
            tally.row(queue, name)[RETRIED] += 1
            return
        tally.finished(queue, name, "running", final, enqueued_at, now)
        if key is not None:
            keys.add((queue, key))
        if isinstance(s, Ack | Bury) and s.follow_ups:
            self.enqueue(tally, now, s.follow_ups, bounded=False)

    def release_keys(self, tally: Tally, now: float, keys: Keys) -> None:
        """Move the oldest blocked jobs of each key into the slots that are free now."""
        for queue, key in keys:
            self._release_key(tally, now, queue, key)

    def _release_key(self, tally: Tally, now: float, queue: str, key: str) -> None:
        active = self.con.execute(self.q.key_active, (queue, key)).fetchone()[0]
        while True:
            head = self.con.execute(
                self.q.key_blocked_head, (queue, key, _BLOCKED_BATCH)
            ).fetchall()
            for seq, name, key_limit, run_at in head:
                if active >= key_limit:
                    return
                state = "scheduled" if run_at > now else "queued"
                self.con.execute(self.q.set_state, (seq, state))
                tally.move(queue, name, "blocked", state)
                self.unblocked += 1
                active += 1
            if len(head) < _BLOCKED_BATCH:
                return

    # ------------------------------------------------------------------ maintenance

    def recover_expired(self, tally: Tally, now: float, limit: int) -> int:
        """Expired leases back to queued, or dead after ``max_recoveries``."""
        rows = self.con.execute(self.q.recover_expired, (now, _LEASE_EXPIRED, limit)).fetchall()
        keys: Keys = set()
        for queue, name, state, key, enqueued_at in rows:
            if state == "dead":
                tally.finished(queue, name, "running", "dead", enqueued_at, now)
                if key is not None:
                    keys.add((queue, key))
            else:
                tally.move(queue, name, "running", "queued")
                tally.row(queue, name)[RECOVERED] += 1
        if keys:
            self.release_keys(tally, now, keys)
        return len(rows)

    def prune_jobs(self, tally: Tally, now: float, limit: int) -> int:
        """Delete final jobs past their TTL."""
        rows = self.con.execute(self.q.prune_jobs, (now, limit)).fetchall()
        for queue, name, state in rows:
            tally.move(queue, name, state, None)
        return len(rows)

    def cancel(self, tally: Tally, now: float, job_ids: Sequence[str]) -> list[JobState | None]:
        """Cancel pending jobs; flag running ones for their next heartbeat."""
        keys: Keys = set()
        out: list[JobState | None] = []
        for job_id in job_ids:
            row = self._brief(job_id)
            if row is None:
                out.append(None)
                continue
            state = row[3]
            if state in PENDING:
                state = self._finish_pending(tally, now, row, "cancelled", keys)
            elif state == "running":
                self.con.execute(self.q.request_cancel, (row[0],))
            out.append(JobState(state))
        if keys:
            self.release_keys(tally, now, keys)
        return out

    def _brief(self, job_id: str) -> Any:
        return self.con.execute(self.q.job_brief, (job_id, id_hash(job_id))).fetchone()

    def _finish_pending(self, tally: Tally, now: float, row: Any, final: str, keys: Keys) -> str:
        seq, queue, name, state, key, enqueued_at = row[:6]
        self.con.execute(self.q.finish_pending, (seq, final, now))
        tally.finished(queue, name, state, final, enqueued_at, now)
        if key is not None:
            keys.add((queue, key))
        return final

    def delete(self, tally: Tally, now: float, job_ids: Sequence[str]) -> int:
        """Delete jobs that are not running (unfinished ones count as cancelled first)."""
        keys: Keys = set()
        n = 0
        for job_id in job_ids:
            row = self._brief(job_id)
            if row is None or row[3] == "running":
                continue
            state = row[3]
            if state not in FINAL:
                state = self._finish_pending(tally, now, row, "cancelled", keys)
            self.con.execute(self.q.delete_job, (row[0],))
            tally.move(row[1], row[2], state, None)
            n += 1
        if keys:
            self.release_keys(tally, now, keys)
        return n

    def requeue(self, tally: Tally, now: float, job_ids: Sequence[str]) -> int:
        """Dead or cancelled jobs start over as new arrivals (their errors are kept)."""
        next_seq = self.con.execute(self.q.max_seq).fetchone()[0]
        n = 0
        for job_id in job_ids:
            row = self._brief(job_id)
            if row is None or row[3] not in ("dead", "cancelled"):
                continue
            seq, queue, name, state, key, _enq, dedupe_key, key_limit = row
            if (
                dedupe_key is not None
                and self.con.execute(self.q.dedupe_holder, (queue, dedupe_key)).fetchone()
            ):
                dedupe_key = None  # another unfinished job holds it now
            placed = "queued"
            if key is not None:
                placed = _Admission(self).keyed_state(queue, key, key_limit, placed)
            next_seq += 1
            self.con.execute(self.q.requeue_job, (seq, next_seq, placed, now, dedupe_key))
            tally.move(queue, name, state, None)
            tally.admitted(queue, name, placed, now)
            n += 1
        return n

    # ------------------------------------------------------------------ records

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Records of these jobs, ``None`` for unknown ids."""
        rows = self.con.execute(self.q.get_jobs, (ids_json(job_ids),)).fetchall()
        found = {r[0]: record_of(r) for r in rows}
        return [found.get(i) for i in job_ids]


def _plain_acks(settlements: Sequence[Settlement]) -> bool:
    """Several acks without follow-ups, each of a different job: one statement does them."""
    if len(settlements) < _ACK_BATCH_MIN:
        return False
    ids = set()
    for s in settlements:
        if type(s) is not Ack or s.follow_ups:
            return False
        ids.add(s.delivery.job_id)
    return len(ids) == len(settlements)


def _claim_order(row: Any) -> tuple[int, float, int]:
    return (-row[10], row[12], row[0])
