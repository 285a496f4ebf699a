"""The probe: an app whose tasks write every run to a ledger, and misbehave on request.

Run it as ``offload worker tests.faults.harness.probe:app -Q faults`` with
``OFFLOAD_FAULTS_LEDGER`` naming a folder. Each process appends to its own file
``<folder>/<pid>.log``, one line per event, written with ``os.write`` on an ``O_APPEND``
descriptor and fsync'd (a SIGKILL or a power cut loses nothing already written)::

    start <job_id> <attempt> <pid> <monotonic> <run>
    end   <job_id> <attempt> <pid> <monotonic> <run>
    fail  <job_id> <attempt> <pid> <monotonic> <run>

* ``attempt`` is ``current_job().attempt``: a run after a crash recovery or a release
  repeats the attempt, a retry after a failure is the next one. Two ``start`` lines with
  the same job and attempt are therefore one *duplicate execution*.
* ``run`` is a fresh random id per execution. The task returns it as its result, so the
  checker can tell which execution's outcome the broker accepted (the fencing check).
* ``monotonic`` is ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on
  the machine, so the harness compares it with the times it killed processes).

The job's arguments choose the behaviour (``mode``):

========  ===========================================================================
``ok``     sleep ``seconds`` (cooperatively), then return the run id
``raise``  raise ``ProbeError`` (retried per the job's ``retries``, then dead-lettered)
``hang``   never return (only a time limit, a cancel or a lost lease stops it)
``exit``   ``os._exit(3)``: the process running the task ends abruptly
``kill``   SIGKILL the process running the task
``memory`` allocate ``mb`` MiB (touching every page), hold it ``seconds``, return;
           under a memory limit this raises ``MemoryError`` or gets the process killed
``block``  block the thread for ``seconds`` with ``time.sleep`` (in the async task:
           the worker's event loop is blocked the whole time)
========  ===========================================================================

``times`` (default: always) makes a mode apply only to the first ``times`` attempts
(counted by ``attempt``); later attempts behave as ``ok``, e.g. a job that fails once
and then succeeds.

Three tasks share that body: ``faults.probe`` (async, on the worker's loop),
``faults.probe_sync`` (a thread) and ``faults.probe_process`` (a pool child process; its
ledger lines carry the child's pid).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from offload import App, current_job

__all__ = ["QUEUE", "ProbeError", "app", "probe", "probe_process", "probe_sync"]

QUEUE = "faults"
LEDGER_ENV = "OFFLOAD_FAULTS_LEDGER"
MODES = ("ok", "raise", "hang", "exit", "kill", "memory", "block")

app = App()  # the broker comes from OFFLOAD_BROKER (or --broker)
_ledger: tuple[int, int] | None = None  # (pid, fd): reopened in a forked child


class ProbeError(Exception):
    """The failure the probe raises in ``raise`` mode."""


def _fd() -> int:
    global _ledger
    pid = os.getpid()
    if _ledger is None or _ledger[0] != pid:
        path = os.path.join(os.environ[LEDGER_ENV], f"{pid}.log")
        _ledger = (pid, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    return _ledger[1]


def record(kind: str, job_id: str, attempt: int, run: str) -> None:
    """Append one ledger line and fsync it."""
    fd = _fd()
    os.write(fd, f"{kind} {job_id} {attempt} {os.getpid()} {time.monotonic()} {run}\n".encode())
    os.fsync(fd)


def _begin(mode: str, times: int | None) -> tuple[str, int, str, str]:
    """Record the start; return (job id, attempt, run id, the mode for this attempt)."""
    if mode not in MODES:
        raise ValueError(f"unknown probe mode {mode!r}; use one of {', '.join(MODES)}")
    ctx = current_job()
    run = uuid.uuid4().hex[:12]
    record("start", ctx.id, ctx.attempt, run)
    if times is not None and ctx.attempt > times:
        mode = "ok"
    return ctx.id, ctx.attempt, run, mode


def _misbehave(mode: str, mb: int) -> bytearray | None:
    """The modes that end the process or raise at once, and ``memory``'s allocation."""
    if mode == "raise":
        raise ProbeError("the probe failed on purpose")
    if mode == "exit":
        os._exit(3)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # the signal is delivered before this returns
    if mode == "memory":
        block = bytearray(mb * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return block
    return None


def _finish(job_id: str, attempt: int, run: str, failed: bool) -> None:
    record("fail" if failed else "end", job_id, attempt, run)


@app.task(name="faults.probe", queue=QUEUE)
async def probe(
    n: int = 0, mode: str = "ok", seconds: float = 0.05, mb: int = 0, times: int | None = None
) -> str:
    """The async probe (see the module docs); returns the id of this run."""
    job_id, attempt, run, mode = _begin(mode, times)
    try:
        held = _misbehave(mode, mb)
        if mode == "hang":
            await asyncio.Event().wait()
        elif mode == "block":
            time.sleep(seconds)
        else:
            await asyncio.sleep(seconds)
        del held
    except Exception:
        _finish(job_id, attempt, run, failed=True)
        raise
    _finish(job_id, attempt, run, failed=False)
    return run


def _sync_body(mode: str, seconds: float, mb: int, times: int | None) -> str:
    job_id, attempt, run, mode = _begin(mode, times)
    try:
        held = _misbehave(mode, mb)
        time.sleep(1e9 if mode == "hang" else seconds)
        del held
    except Exception:
        _finish(job_id, attempt, run, failed=True)
        raise
    _finish(job_id, attempt, run, failed=False)
    return run


@app.task(name="faults.probe_sync", queue=QUEUE)
def probe_sync(
    n: int = 0, mode: str = "ok", seconds: float = 0.05, mb: int = 0, times: int | None = None
) -> str:
    """The probe in a worker thread."""
    return _sync_body(mode, seconds, mb, times)


@app.task(name="faults.probe_process", queue=QUEUE, executor="process")
def probe_process(
    n: int = 0, mode: str = "ok", seconds: float = 0.05, mb: int = 0, times: int | None = None
) -> str:
    """The probe in a process-pool child (``exit``/``kill``/``memory`` hit the child)."""
    return _sync_body(mode, seconds, mb, times)
