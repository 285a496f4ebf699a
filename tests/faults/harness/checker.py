"""The checker: what producers were told, what workers did, what the broker kept.

Jepsen's queue vocabulary (``/work/shared/RELIABILITY.md`` section 0), applied to three
records of one run:

* the **history** (:class:`History`): JSON lines in ``<run>/history/*.jsonl``. Producers
  write ``invoke`` before each enqueue batch and ``ok`` / ``info`` (indeterminate:
  timed out or the connection broke) / ``fail`` (refused for sure) after it; the harness
  writes *nemesis* events (``kill``, ``stop``, ``cont``, ``term``, ``spawn``,
  ``backend_kill``, ``backend_ready``) with the pid they hit. Every line has ``at``,
  ``time.monotonic()``.
* the **ledger** (:class:`Ledger`): the probe's ``start`` / ``end`` / ``fail`` lines
  (see :mod:`tests.faults.harness.probe`), one :class:`Run` per execution.
* the broker's **final records** (:func:`fetch_outcomes`): state, dead reason, and the
  run id the accepted result names.

:func:`check` compares them and returns a :class:`Report`:

``acknowledged``  ids whose enqueue returned OK
``completed``     acknowledged and ``succeeded``
``dead``          acknowledged and in the DLQ, with ``dead_reasons`` counted
``lost``          acknowledged but neither completed nor dead (``stuck`` is the part of
                  them that still has a record, by state; the rest vanished)
``unexpected``    executed or stored but never attempted
``duplicate_starts`` / ``duplicate_ends``: executions of one (job, attempt) beyond the
                  first: a recovery or a release runs the same attempt again
``stale_commits`` results accepted from a run whose lease was gone: a later run of the
                  job had started, or the run's process was paused (SIGSTOP) longer
                  than the lease while it ran. Fencing makes this 0.
``recovery``      per job orphaned by a fault (``kill``/``stop``/``term`` of a pid: its
                  latest run was on that pid; ``backend_kill``: any pid,
                  and the broker recovered its lease or the same attempt ran again): the
                  seconds from the fault to the broker's ``lease_expired`` recovery
                  (``recovery_*``: runnable again) and to the next start (``restart_*``:
                  that adds the wait behind the backlog), ``p50`` and ``max``
``reruns_running`` / ``reruns_unsettled``: duplicates a fault explains, of jobs that were
                  running at the fault (at most ``concurrency`` per fault) or had ended
                  with their outcome not yet committed; ``unexplained_duplicates`` are
                  the rest (0 when only the injected faults re-ran jobs)

A run is ``valid`` when ``lost``, ``unexpected`` and ``stale_commits`` are all 0;
duplicates are reported, not invalid (at-least-once), and tests bound them.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from offload.brokers import open_broker

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = [
    "History",
    "Ledger",
    "Outcome",
    "Report",
    "Run",
    "check",
    "fetch_outcomes",
]

FINAL = frozenset({"succeeded", "dead", "cancelled"})
#: Faults that may re-run jobs: a SIGTERM past the grace period releases them, a
#: backend_kill hits every process.
FAULTS = frozenset({"kill", "stop", "term", "backend_kill"})


# --------------------------------------------------------------------------- history


class History:
    """An append-only JSON-lines file of one writer (fsync'd line by line)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **event: Any) -> None:
        event.setdefault("at", time.monotonic())
        event.setdefault("wall", time.time())
        os.write(self._fd, (json.dumps(event) + "\n").encode())
        os.fsync(self._fd)

    def enqueue(self, kind: str, ids: Iterable[str], error: str = "") -> None:
        """A producer event: ``invoke``, ``ok``, ``info`` or ``fail`` for these ids."""
        self.write(f="enqueue", type=kind, ids=list(ids), error=error)

    def nemesis(self, kind: str, pid: int | None = None, **extra: Any) -> None:
        """A fault (or a process start) the harness caused."""
        self.write(f="nemesis", type=kind, pid=pid, **extra)

    def close(self) -> None:
        os.close(self._fd)

    @staticmethod
    def read(folder: Path) -> list[dict[str, Any]]:
        """Every event of every file in ``folder``, by time (a torn last line is skipped:
        its writer was killed mid-write)."""
        events = []
        for path in sorted(folder.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return sorted(events, key=lambda e: e["at"])


# --------------------------------------------------------------------------- ledger


@dataclass
class Run:
    """One execution of a job, from the ledger."""

    job_id: str
    attempt: int
    pid: int
    run: str
    started: float
    ended: float | None = None  # the body completed
    failed: bool = False  # the body raised


@dataclass
class Ledger:
    """Every run in the ledger folder, by run id and by job (in start order)."""

    runs: dict[str, Run] = field(default_factory=dict)
    by_job: dict[str, list[Run]] = field(default_factory=lambda: defaultdict(list))
    torn_lines: int = 0

    @classmethod
    def read(cls, folder: Path) -> Ledger:
        ledger = cls()
        rows = []
        for path in folder.glob("*.log"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 6:
                    ledger.torn_lines += 1
                    continue
                kind, job_id, attempt, pid, at, run = parts
                rows.append((float(at), kind, job_id, int(attempt), int(pid), run))
        for at, kind, job_id, attempt, pid, run_id in sorted(rows):
            if kind == "start":
                ledger.runs[run_id] = run = Run(job_id, attempt, pid, run_id, at)
                ledger.by_job[job_id].append(run)
            elif run_id in ledger.runs:
                ledger.runs[run_id].ended = at
                ledger.runs[run_id].failed = kind == "fail"
        return ledger

    def in_flight(self, pid: int, at: float) -> list[Run]:
        """Runs of process ``pid`` started before ``at`` and not finished by then."""
        return [
            r
            for r in self.runs.values()
            if r.pid == pid and r.started < at and (r.ended is None or r.ended > at)
        ]


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """What the broker kept of one job."""

    state: str
    reason: str | None  # the last error's reason code
    run: str | None  # the run id in the accepted result (the probe returns it)
    attempts: int
    recoveries: int
    recovered_at: tuple[float, ...] = ()  # broker-clock times of lease_expired recoveries
    worker_id: str | None = None  # the last claimer (``host:pid:random``)


async def fetch_outcomes(url: str, ids: list[str]) -> dict[str, Outcome | None]:
    """The broker's record of each job (``None``: no record at all)."""
    broker = open_broker(url)
    await broker.open()
    try:
        out: dict[str, Outcome | None] = {}
        for i in range(0, len(ids), 500):
            batch = ids[i : i + 500]
            for job_id, rec in zip(batch, await broker.get_jobs(batch), strict=True):
                out[job_id] = None if rec is None else _outcome(rec)
        return out
    finally:
        await broker.close()


def fetch_outcomes_sync(url: str, ids: list[str]) -> dict[str, Outcome | None]:
    """:func:`fetch_outcomes` from sync code."""
    return asyncio.run(fetch_outcomes(url, ids))


def _outcome(rec: Any) -> Outcome:
    run = None
    if rec.result is not None:
        try:
            value = msgspec.json.decode(rec.result)
        except msgspec.DecodeError:
            value = None
        run = value if isinstance(value, str) else None
    reason = rec.errors[-1].reason if rec.errors else None
    recovered = tuple(e.at for e in rec.errors if e.reason == "lease_expired")
    return Outcome(
        str(rec.state), reason, run, rec.attempts, rec.recoveries, recovered, rec.worker_id
    )


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """The checker's figures for one run (see the module docs); ``to_json`` for files."""

    attempted: int = 0
    acknowledged: int = 0
    indeterminate: int = 0
    recovered: int = 0
    failed_enqueues: int = 0
    completed: int = 0
    dead: int = 0
    dead_reasons: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_ids: list[str] = field(default_factory=list)
    stuck: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    executions: int = 0
    duplicate_starts: int = 0
    duplicate_ends: int = 0
    jobs_rerun: int = 0
    stale_commits: int = 0
    stale_ids: list[str] = field(default_factory=list)
    unexplained_results: int = 0
    kills: int = 0
    pauses: int = 0
    outages: int = 0
    orphaned: int = 0
    reruns_running: int = 0
    reruns_unsettled: int = 0
    unexplained_duplicates: int = 0
    recovery_p50_s: float | None = None
    recovery_max_s: float | None = None
    restart_p50_s: float | None = None
    restart_max_s: float | None = None
    torn_ledger_lines: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """No acknowledged job lost, nothing unexpected, no stale commit."""
        return self.lost == 0 and self.unexpected == 0 and self.stale_commits == 0

    def to_json(self) -> str:
        return json.dumps({"valid": self.valid, **asdict(self)}, indent=2, sort_keys=True)

    def summary(self) -> str:
        """One line for test output."""
        rec = (
            f"{self.orphaned} orphaned: runnable again p50 {_s(self.recovery_p50_s)} "
            f"max {_s(self.recovery_max_s)}, started again p50 {_s(self.restart_p50_s)} "
            f"max {_s(self.restart_max_s)}"
            if self.orphaned
            else "no orphaned job"
        )
        return (
            f"acknowledged {self.acknowledged}, completed {self.completed}, dead {self.dead} "
            f"{self.dead_reasons or ''}, lost {self.lost}, unexpected {self.unexpected}, "
            f"duplicate starts {self.duplicate_starts} ends {self.duplicate_ends}, "
            f"stale commits {self.stale_commits}, kills {self.kills}, pauses {self.pauses}, "
            f"backend outages {self.outages}, "
            f"re-runs of running jobs {self.reruns_running}, of unsettled {self.reruns_unsettled}, "
            f"unexplained {self.unexplained_duplicates}, "
            f"{rec}"
        )


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds}s"


def check(
    events: list[dict[str, Any]],
    ledger: Ledger,
    outcomes: dict[str, Outcome | None],
    *,
    lease_s: float,
) -> Report:
    """Compare the history, the ledger and the broker's records (module docs)."""
    report = Report(torn_ledger_lines=ledger.torn_lines)
    attempted, acked = _producers(events, report)
    _final_states(acked, outcomes, report)
    stored = {j for j, o in outcomes.items() if o is not None}
    report.unexpected = len((set(ledger.by_job) | stored) - attempted)
    report.recovered = len({j for j in attempted - acked if j in ledger.by_job or j in stored})
    _duplicates(ledger, report)
    _stale(events, ledger, outcomes, lease_s, report)
    _recovery(events, ledger, outcomes, report)
    return report


def _producers(events: list[dict[str, Any]], report: Report) -> tuple[set[str], set[str]]:
    attempted: set[str] = set()
    acked: set[str] = set()
    unsure: set[str] = set()
    refused: set[str] = set()
    for e in events:
        if e["f"] != "enqueue":
            continue
        ids = set(e["ids"])
        {"invoke": attempted, "ok": acked, "info": unsure, "fail": refused}[e["type"]].update(ids)
    report.attempted = len(attempted)
    report.acknowledged = len(acked)
    report.indeterminate = len((unsure | (attempted - refused)) - acked)
    report.failed_enqueues = len(refused - acked)
    return attempted, acked


def _final_states(acked: set[str], outcomes: dict[str, Outcome | None], report: Report) -> None:
    reasons: Counter[str] = Counter()
    stuck: Counter[str] = Counter()
    lost = []
    for job_id in sorted(acked):
        o = outcomes.get(job_id)
        if o is not None and o.state == "succeeded":
            report.completed += 1
        elif o is not None and o.state == "dead":
            report.dead += 1
            reasons[o.reason or "?"] += 1
        else:
            lost.append(job_id)
            stuck[o.state if o is not None else "missing"] += 1
    report.dead_reasons = dict(reasons)
    report.stuck = {s: n for s, n in stuck.items() if s != "missing"}
    report.lost = len(lost)
    report.lost_ids = lost[:50]


def _duplicates(ledger: Ledger, report: Report) -> None:
    starts: Counter[tuple[str, int]] = Counter()
    ends: Counter[tuple[str, int]] = Counter()
    for run in ledger.runs.values():
        starts[(run.job_id, run.attempt)] += 1
        if run.ended is not None and not run.failed:
            ends[(run.job_id, run.attempt)] += 1
    report.executions = len(ledger.runs)
    report.duplicate_starts = sum(n - 1 for n in starts.values())
    report.duplicate_ends = sum(n - 1 for n in ends.values() if n > 1)
    report.jobs_rerun = len({job for (job, _), n in starts.items() if n > 1})


def _pauses(events: list[dict[str, Any]]) -> dict[int, list[tuple[float, float]]]:
    """Per pid, the intervals it was stopped (SIGSTOP to SIGCONT, or to the end)."""
    out: dict[int, list[tuple[float, float]]] = defaultdict(list)
    stopped: dict[int, float] = {}
    for e in events:
        if e["f"] == "nemesis" and e["type"] == "stop":
            stopped[e["pid"]] = e["at"]
        elif e["f"] == "nemesis" and e["type"] in ("cont", "kill") and e["pid"] in stopped:
            out[e["pid"]].append((stopped.pop(e["pid"]), e["at"]))
    for pid, since in stopped.items():
        out[pid].append((since, float("inf")))
    return out


def _stale(
    events: list[dict[str, Any]],
    ledger: Ledger,
    outcomes: dict[str, Outcome | None],
    lease_s: float,
    report: Report,
) -> None:
    pauses = _pauses(events)
    stale = []
    for job_id, o in outcomes.items():
        if o is None or o.run is None:
            continue
        winner = ledger.runs.get(o.run)
        if winner is None:
            report.unexplained_results += 1
            continue
        later = any(r.started > winner.started for r in ledger.by_job.get(job_id, []))
        end = winner.ended if winner.ended is not None else float("inf")
        paused = any(
            min(b, end) - max(a, winner.started) > lease_s for a, b in pauses.get(winner.pid, [])
        )
        if later or paused:
            stale.append(job_id)
    report.stale_commits = len(stale)
    report.stale_ids = sorted(stale)[:50]


def _recovery(
    events: list[dict[str, Any]],
    ledger: Ledger,
    outcomes: dict[str, Outcome | None],
    report: Report,
) -> None:
    """Jobs each fault orphaned, how soon they came back, and the re-runs it caused.

    A ``kill``/``stop``/``term`` of pid P at time t orphans the jobs whose latest run before t was
    on P, if afterwards the broker recovered the lease or the same attempt started again
    (a ``backend_kill`` is a fault of every process: the latest run on any pid).
    The re-run is of a *running* job if P's run had not ended by t, else of an
    *unsettled* one (it ended, its outcome was not committed yet).
    """
    faults = [e for e in events if e["f"] == "nemesis" and e["type"] in FAULTS]
    report.kills = sum(e["type"] == "kill" for e in faults)
    report.pauses = sum(e["type"] == "stop" for e in faults)
    report.outages = sum(e["type"] == "backend_kill" for e in faults)
    recovered: list[float] = []
    restarted: list[float] = []
    for e in faults:
        for run in _held_at(ledger, e["pid"], e["at"]):
            outcome = outcomes.get(run.job_id)
            times = outcome.recovered_at if outcome else ()
            back = [t - e["wall"] for t in times if t >= e["wall"]]
            nxt = [
                r.started - e["at"]
                for r in ledger.by_job.get(run.job_id, [])
                if r.attempt == run.attempt and r.started > e["at"]
            ]
            if back:
                recovered.append(min(back))
            if nxt:
                restarted.append(min(nxt))
                if run.ended is None or run.ended > e["at"]:
                    report.reruns_running += 1
                else:
                    report.reruns_unsettled += 1
            report.orphaned += bool(back or nxt)
    report.unexplained_duplicates = max(
        0, report.duplicate_starts - report.reruns_running - report.reruns_unsettled
    )
    report.recovery_p50_s, report.recovery_max_s = _p50_max(recovered)
    report.restart_p50_s, report.restart_max_s = _p50_max(restarted)


def _held_at(ledger: Ledger, pid: int | None, at: float) -> list[Run]:
    """Runs on ``pid`` (any, if ``None``) that were their job's latest run before ``at``."""
    out = []
    for runs in ledger.by_job.values():
        before = [r for r in runs if r.started < at]
        if before and pid in (None, before[-1].pid) and not before[-1].failed:
            out.append(before[-1])
    return out


def _p50_max(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.median(values), 3), round(max(values), 3)
