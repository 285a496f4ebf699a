"""``offload worker --processes N``: N worker processes, restarted if one dies.

The supervisor runs no jobs. It starts N children (each an ordinary ``offload worker``
with one process), restarts any that exits unexpectedly (with backoff if it keeps
crashing), and on SIGTERM/SIGINT forwards SIGTERM so each child shuts down gracefully,
then SIGKILLs whatever is left after the grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Supervisor"]

log = logging.getLogger("offload.supervisor")


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    crashes: list[float] = field(default_factory=list)


class Supervisor:
    """Keeps ``n`` worker processes running the command ``child_argv``."""

    def __init__(self, child_argv: Sequence[str], n: int, grace_s: float) -> None:
        if n < 1:
            raise ValueError("--processes must be at least 1")
        self.child_argv = list(child_argv)
        self.n = n
        self.grace_s = grace_s
        self.children: dict[int, _Child] = {}
        self.restarts = 0
        self._stopping = False

    def _spawn(self, index: int, crashes: list[float] | None = None) -> _Child:
        env = dict(os.environ, OFFLOAD_SUPERVISOR_PID=str(os.getpid()))
        proc = subprocess.Popen([sys.executable, "-m", "offload", *self.child_argv], env=env)
        log.info("started worker process %d (pid %d)", index, proc.pid)
        child = _Child(index, proc, time.monotonic(), crashes or [])
        self.children[index] = child
        return child

    def _stop(self, signum: int, _frame: object) -> None:
        if self._stopping:
            for child in self.children.values():
                _send(child.proc, signal.SIGKILL)
            return
        self._stopping = True
        log.info("supervisor got %s: stopping %d worker(s)", signal.Signals(signum).name, self.n)
        for child in self.children.values():
            _send(child.proc, signal.SIGTERM)

    def run(self) -> int:
        """Supervise until told to stop; return the exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for i in range(self.n):
            self._spawn(i)
        while not self._stopping:
            time.sleep(0.2)
            for child in list(self.children.values()):
                if child.proc.poll() is not None and not self._stopping:
                    self._restart(child)
        return self._wait_all()

    def _restart(self, child: _Child) -> None:
        code = child.proc.returncode
        now = time.monotonic()
        recent = [t for t in child.crashes if now - t < 60] + [now]
        delay = 0.0 if len(recent) <= 1 else min(30.0, 0.5 * 2 ** (len(recent) - 2))
        log.warning(
            "worker process %d (pid %d) exited with code %s; restarting%s",
            child.index,
            child.proc.pid,
            code,
            f" in {delay:.1f}s (crashing repeatedly)" if delay else "",
        )
        if delay:
            time.sleep(delay)
        self.restarts += 1
        self._spawn(child.index, recent)

    def _wait_all(self) -> int:
        deadline = time.monotonic() + self.grace_s + 5
        for child in self.children.values():
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", child.proc.pid)
                _send(child.proc, signal.SIGKILL)
                child.proc.wait()
        log.info("supervisor stopped (%d restart(s))", self.restarts)
        return 0


def _send(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
