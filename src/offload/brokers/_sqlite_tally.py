"""State counts and Little's-Law counters of the SQLite broker, kept as deltas per batch.

Every state change inside a transaction is recorded here as well; at commit the deltas
are added to the ``stats`` table with one upsert per (queue, task) touched. So stats are
exact without ever counting rows of ``jobs``, and a batch of 100 claims costs one upsert,
not 100 trigger runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.brokers.base import STATS_EPOCH, Counters, StateCounts

if TYPE_CHECKING:
    from collections.abc import Sequence
    from sqlite3 import Cursor

__all__ = ["COLUMNS", "Tally", "counters_of", "state_counts_of"]

STATES = ("scheduled", "queued", "blocked", "running", "retrying", "succeeded", "dead", "cancelled")
COUNTERS = (
    "enqueued",
    "started",
    "waited",
    "succeeded",
    "dead",
    "cancelled",
    "retried",
    "recovered",
    "wait_s",
    "service_s",
    "system_s",
    "in_system",
    "in_system_enq_s",
)
#: The delta columns of ``stats``, in the order ``upsert_stats`` binds them.
COLUMNS = tuple(f"n_{s}" for s in STATES) + COUNTERS

_AT = {name: i for i, name in enumerate(COLUMNS)}
STATE_AT = {s: i for i, s in enumerate(STATES)}
ENQUEUED = _AT["enqueued"]
STARTED = _AT["started"]
WAITED = _AT["waited"]
FINAL_AT = {"succeeded": _AT["succeeded"], "dead": _AT["dead"], "cancelled": _AT["cancelled"]}
RETRIED = _AT["retried"]
RECOVERED = _AT["recovered"]
WAIT_S = _AT["wait_s"]
SERVICE_S = _AT["service_s"]
SYSTEM_S = _AT["system_s"]
IN_SYSTEM = _AT["in_system"]
IN_SYSTEM_ENQ_S = _AT["in_system_enq_s"]


class Tally:
    """Deltas for the ``stats`` rows touched by one transaction."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[float]] = {}

    def row(self, queue: str, name: str) -> list[float]:
        """The delta row of one (queue, task), created at zero."""
        r = self.rows.get((queue, name))
        if r is None:
            r = self.rows[queue, name] = [0] * len(COLUMNS)
        return r

    def move(self, queue: str, name: str, old: str | None, new: str | None) -> None:
        """A job changed state (``None``: it did not exist before / is deleted now)."""
        r = self.row(queue, name)
        if old is not None:
            r[STATE_AT[old]] -= 1
        if new is not None:
            r[STATE_AT[new]] += 1

    def admitted(self, queue: str, name: str, state: str, enqueued_at: float) -> None:
        """A job entered the system in ``state``."""
        r = self.row(queue, name)
        r[STATE_AT[state]] += 1
        r[ENQUEUED] += 1
        r[IN_SYSTEM] += 1
        r[IN_SYSTEM_ENQ_S] += enqueued_at - STATS_EPOCH

    def finished(
        self, queue: str, name: str, old: str, final: str, enqueued_at: float, now: float
    ) -> None:
        """A job left the system in a final state."""
        r = self.row(queue, name)
        r[STATE_AT[old]] -= 1
        r[STATE_AT[final]] += 1
        r[FINAL_AT[final]] += 1
        r[SYSTEM_S] += now - enqueued_at
        r[IN_SYSTEM] -= 1
        r[IN_SYSTEM_ENQ_S] -= enqueued_at - STATS_EPOCH

    def flush(self, cur: Cursor, upsert: str) -> None:
        """Add the deltas to ``stats`` (one statement per row touched)."""
        if self.rows:
            cur.executemany(upsert, [(q, n, *r) for (q, n), r in self.rows.items()])
            self.rows.clear()


def state_counts_of(rows: Sequence[Sequence[float]]) -> StateCounts:
    """Sum the ``n_*`` columns of ``stats`` rows (each row: queue, name, then COLUMNS)."""
    sums = [int(sum(r[2 + i] for r in rows)) for i in range(len(STATES))]
    return StateCounts(**dict(zip(STATES, sums, strict=True)))


def counters_of(row: Sequence[float]) -> Counters:
    """The counters of one ``stats`` row (queue, name, then COLUMNS)."""
    base = 2 + len(STATES)
    values = {name: row[base + i] for i, name in enumerate(COUNTERS)}
    for name in COUNTERS:
        if not name.endswith("_s"):
            values[name] = int(values[name])
    return Counters(**values)  # type: ignore[arg-type]
