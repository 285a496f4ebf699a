"""Worker processes: start one in its own session, stop its whole tree, read its CPU time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root``, its live descendants and their reaped
    children (``cutime``/``cstime``), so forking workers are charged in full."""
    total = 0.0
    for pid in descendants(root):
        fields = _stat(pid)
        if fields is not None:
            total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


def start(cmd: list[str], env: dict[str, str], cwd: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a process group of its own (so its whole tree can be signalled)
    but in the caller's session (so the orchestrator can still end everything), output to
    ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, process_group=0
        )


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers (children) even if the leader left
    proc.wait()


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (a driver started with a new session and
    everything it started): the cleanup after a timeout or Ctrl-C."""
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None and int(fields[3]) == sid:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_until(predicate, timeout: float, step: float = 0.005) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
