"""Real ``offload`` processes for acceptance tests, and a ledger checker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def offload_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "offload", *args]


def env_for(url: str, ledger: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, OFFLOAD_BROKER=url, PYTHONPATH=str(ROOT), **extra)
    if ledger is not None:
        env["OFFLOAD_TEST_LEDGER"] = str(ledger)
    return env


def run_cli(
    url: str, *args: str, timeout: float = 60, **kw: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        offload_cmd(*args),
        env=env_for(url, **kw),
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def start_worker(url: str, ledger: Path, *args: str) -> subprocess.Popen[bytes]:
    """An ``offload worker`` process; its log goes to ``<ledger>/../worker-*.log``."""
    log_path = ledger.parent / f"worker-{time.time_ns()}.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            offload_cmd("worker", "tests.acceptance.crashapp:app", *args),
            env=env_for(url, ledger),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 30
) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


@dataclass
class Ledger:
    """What the workers did, read back from their ledger files, in time order.

    ``starts[job_id]`` and ``ends[job_id]`` list ``(attempt, pid)`` by monotonic time.
    """

    starts: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, folder: Path) -> Ledger:
        lines = []
        for path in folder.glob("*.log"):
            for line in path.read_text().splitlines():
                kind, job_id, attempt, pid, at = line.split()
                lines.append((float(at), kind, job_id, int(attempt), int(pid)))
        ledger = cls()
        for _, kind, job_id, attempt, pid in sorted(lines):
            target = ledger.starts if kind == "start" else ledger.ends
            target[job_id].append((attempt, pid))
        return ledger

    def rerun(self) -> dict[str, list[tuple[int, int]]]:
        """Jobs started more than once."""
        return {j: s for j, s in self.starts.items() if len(s) > 1}


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
