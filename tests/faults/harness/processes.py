"""One fault run: its folder, its ``offload worker`` processes, and the faults it injects.

A :class:`FaultRun` owns a folder::

    <root>/ledger/<pid>.log      the probe's lines (tests.faults.harness.probe)
    <root>/history/*.jsonl       producers' enqueues and the harness's faults
    <root>/logs/worker-N.log     each worker's output
    <root>/report.json           the checker's figures (FaultRun.report)

Every signal it sends is written to the history first (``kill``, ``stop``, ``cont``,
``term``) so the checker can measure recovery from that instant. Use it as a context
manager: leaving it SIGKILLs every process it started that is still alive (a SIGSTOPped
one is resumed first so it can die).
"""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tests.acceptance.harness import ROOT, env_for, offload_cmd, wait_until
from tests.faults.harness.checker import (
    History,
    Ledger,
    Report,
    check,
    fetch_outcomes_sync,
)
from tests.faults.harness.probe import LEDGER_ENV, QUEUE
from tests.faults.harness.producer import produce

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["FaultRun", "WorkerProc"]

APP = "tests.faults.harness.probe:app"


@dataclass
class WorkerProc:
    """One ``offload worker`` process and its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    number: int
    spawned: float | None = None  # time.monotonic() at the spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class FaultRun:
    """Workers, producers and faults of one test run (see the module docs).

    ``lease_s``, ``concurrency`` and ``grace_s`` are the defaults of every worker started.
    """

    def __init__(
        self,
        url: str,
        root: Path,
        *,
        lease_s: float = 2.0,
        concurrency: int = 10,
        grace_s: float = 1.0,
    ) -> None:
        self.url = url
        self.root = root
        self.lease_s = lease_s
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.ledger_dir = root / "ledger"
        self.history_dir = root / "history"
        self.logs_dir = root / "logs"
        for d in (self.ledger_dir, self.history_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.history = History(self.history_dir / "harness.jsonl")
        self.workers: list[WorkerProc] = []
        self.others: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ workers

    def start_worker(
        self,
        *extra: str,
        lease_s: float | None = None,
        concurrency: int | None = None,
        grace_s: float | None = None,
        memory_limit_mb: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> WorkerProc:
        """Start ``offload worker`` on the probe app's queue (``extra``: more options)."""
        number = len(self.workers) + 1
        log_path = self.logs_dir / f"worker-{number}.log"
        args = [
            "worker", APP, "-Q", QUEUE,
            "-c", str(concurrency or self.concurrency),
            "--lease", str(lease_s or self.lease_s),
            "--grace", str(self.grace_s if grace_s is None else grace_s),
            *extra,
        ]  # fmt: skip
        limit = None
        if memory_limit_mb is not None:
            limit = _address_space_limit(memory_limit_mb)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                offload_cmd(*args),
                env=env_for(self.url, **{LEDGER_ENV: str(self.ledger_dir)}, **(env or {})),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,
            )
        worker = WorkerProc(proc, log_path, number, time.monotonic())
        self.workers.append(worker)
        self.history.nemesis("spawn", proc.pid, worker=number)
        return worker

    def wait_ready(self, worker: WorkerProc, timeout: float = 30) -> float:
        """Wait until ``worker`` logs that it serves; record ``ready``; return the seconds
        since it was spawned (its boot time)."""
        spawned = time.monotonic() if worker.spawned is None else worker.spawned
        if not wait_until(lambda: "action=worker_started" in worker.output(), timeout, 0.02):
            raise AssertionError(f"worker {worker.number} did not start: {worker.output()}")
        self.history.nemesis("ready", worker.pid, worker=worker.number)
        return time.monotonic() - spawned

    def send(self, worker: WorkerProc, sig: signal.Signals) -> None:
        """Send a signal, recorded in the history (``kill``/``stop``/``cont``/``term``)."""
        kind = {
            signal.SIGKILL: "kill",
            signal.SIGSTOP: "stop",
            signal.SIGCONT: "cont",
            signal.SIGTERM: "term",
        }.get(sig, sig.name.lower())
        worker.proc.send_signal(sig)
        # Stamped after the signal: the ledger's last line from before it is then earlier.
        self.history.nemesis(kind, worker.pid, worker=worker.number, **_now())

    def kill(self, worker: WorkerProc) -> None:
        """SIGKILL and reap."""
        self.send(worker, signal.SIGKILL)
        worker.proc.wait()

    def terminate(self, worker: WorkerProc, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit code (a graceful shutdown)."""
        self.send(worker, signal.SIGTERM)
        code = worker.proc.wait(timeout)
        self.history.nemesis("exit", worker.pid, code=code)
        return code

    def in_flight(self, worker: WorkerProc) -> int:
        """Jobs ``worker`` has started and not finished, from its ledger file."""
        path = self.ledger_dir / f"{worker.pid}.log"
        if not path.exists():
            return 0
        open_runs: set[str] = set()
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 6:
                (open_runs.add if parts[0] == "start" else open_runs.discard)(parts[5])
        return len(open_runs)

    def wait_in_flight(self, worker: WorkerProc, at_least: int = 1, timeout: float = 30) -> bool:
        return wait_until(lambda: self.in_flight(worker) >= at_least, timeout, 0.02)

    # ------------------------------------------------------------------ producers

    def enqueue(
        self,
        n: int,
        *,
        task: str = "faults.probe",
        options: Mapping[str, Any] | None = None,
        **probe_args: Any,
    ) -> list[str]:
        """Enqueue ``n`` probe jobs from this process; return the acknowledged ids."""
        calls = [{"n": i, **probe_args} for i in range(n)]
        return asyncio.run(produce(self.url, self.history, calls, task=task, options=options))

    def start_producer(self, *args: str) -> subprocess.Popen[bytes]:
        """``python -m tests.faults.harness.producer`` with its own history file."""
        n = len(self.others) + 1
        history = self.history_dir / f"producer-{n}.jsonl"
        with open(self.logs_dir / f"producer-{n}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.harness.producer", self.url, str(history),
                 *args],
                env=env_for(self.url),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.others.append(proc)
        return proc

    def kill_producer(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a producer process (recorded like a worker kill) and reap it."""
        proc.kill()
        self.history.nemesis("kill", proc.pid, role="producer", **_now())
        proc.wait()

    def first_start_after(self, at: float) -> dict[int, float]:
        """Per pid, the first ledger ``start`` later than ``at`` (monotonic)."""
        out: dict[int, float] = {}
        for run in Ledger.read(self.ledger_dir).runs.values():
            if run.started > at and run.started < out.get(run.pid, float("inf")):
                out[run.pid] = run.started
        return out

    def ends(self) -> int:
        """Runs that ended so far (any process)."""
        return sum(r.ended is not None for r in Ledger.read(self.ledger_dir).runs.values())

    # ------------------------------------------------------------------ checking

    def attempted(self) -> list[str]:
        """Every id a producer tried to enqueue, in this run."""
        return sorted(
            {i for e in History.read(self.history_dir) if e.get("f") == "enqueue" for i in e["ids"]}
        )

    def wait_final(self, ids: Sequence[str], timeout: float, interval: float = 0.5) -> bool:
        """Wait until every job in ``ids`` is succeeded, dead or cancelled."""
        final = {"succeeded", "dead", "cancelled"}

        def done() -> bool:
            outcomes = fetch_outcomes_sync(self.url, list(ids))
            return all(o is not None and o.state in final for o in outcomes.values())

        return wait_until(done, timeout, interval)

    def running_on(self, worker: WorkerProc) -> list[str]:
        """Jobs the broker still has ``running`` under a lease of ``worker``'s process."""
        outcomes = fetch_outcomes_sync(self.url, self.attempted())
        mark = f":{worker.pid}:"
        return [
            job_id
            for job_id, o in outcomes.items()
            if o is not None and o.state == "running" and mark in (o.worker_id or "")
        ]

    def report(self, name: str = "report", **extra: Any) -> Report:
        """Run the checker over this run and write ``<root>/<name>.json``."""
        events = History.read(self.history_dir)
        outcomes = fetch_outcomes_sync(self.url, self.attempted())
        report = check(events, Ledger.read(self.ledger_dir), outcomes, lease_s=self.lease_s)
        report.extra.update(extra)
        (self.root / f"{name}.json").write_text(report.to_json())
        return report

    # ------------------------------------------------------------------ cleanup

    def stop_workers(self, timeout: float = 60) -> None:
        """Gracefully stop every live worker (SIGTERM to all, then wait for each)."""
        live = [w for w in self.workers if w.alive()]
        for w in live:
            self.send(w, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in live:
            w.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        """SIGKILL whatever is still running (resumed first if stopped)."""
        for w in self.workers:
            if w.alive():
                w.proc.send_signal(signal.SIGCONT)
                w.proc.kill()
                w.proc.wait()
        for proc in self.others:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.history.close()


def _now() -> dict[str, float]:
    return {"at": time.monotonic(), "wall": time.time()}


def _address_space_limit(mb: int) -> Any:
    """A ``preexec_fn`` capping the child's address space (allocations past it fail)."""

    def limit() -> None:
        size = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return limit
