"""G7 and poison pills: a bad job is quarantined, and the queue around it keeps flowing.

Real ``offload worker`` processes on SQLite, Redis and PostgreSQL (private servers), the
probe app of :mod:`tests.faults.harness.probe`:

* **kill pill**: a job that SIGKILLs the worker running it. Each time its lease expires it
  is recovered, until ``max_recoveries`` (default 3); the next expiry dead-letters it
  with reason ``lease_expired``. So it executes at most 4 times and crashes at most 4
  worker processes, while normal jobs enqueued all along keep completing.
* **exception pill**: a job that always raises gets exactly its retries, spaced by the
  retry policy's backoff, then the dead letters with every attempt's traceback.
* **hang pill**: a job that never returns is stopped at its time limit (reason
  ``timeout``), and normal jobs beside it keep at least 80% of the throughput they had
  alone, measured in the same test on the same worker.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

import pytest

from offload.brokers import open_broker
from offload.retry import RetryPolicy
from tests.faults.harness import LONG, scale
from tests.faults.harness.checker import Ledger, fetch_outcomes_sync
from tests.faults.harness.processes import FaultRun, WorkerProc

if TYPE_CHECKING:
    from pathlib import Path

    from offload.brokers.base import JobRecord
    from tests.faults.harness.fixtures import FaultBackend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600 if LONG else 150)]

LEASE_S = 1.0
MAX_RECOVERIES = 3  # the default of @app.task(max_recoveries=...)


def _record(url: str, job_id: str) -> JobRecord:
    async def get() -> JobRecord:
        broker = open_broker(url)
        await broker.open()
        try:
            rec = await broker.get_job(job_id)
        finally:
            await broker.close()
        assert rec is not None, job_id
        return rec

    return asyncio.run(get())


def _final(url: str, ids: list[str]) -> bool:
    outcomes = fetch_outcomes_sync(url, ids)
    return all(o is not None and o.state in ("succeeded", "dead") for o in outcomes.values())


# --------------------------------------------------------------------------- kill pill


@pytest.mark.timeout(600 if LONG else 120)
def test_a_job_that_kills_its_worker_is_dead_lettered_after_three_recoveries(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    url = fault_backend.url
    with FaultRun(url, tmp_path, lease_s=LEASE_S, concurrency=4) as run:
        workers = [run.start_worker(), run.start_worker()]
        for w in workers:
            run.wait_ready(w)
        [pill] = run.enqueue(1, mode="kill")
        normal: list[str] = []
        crashed: list[WorkerProc] = []
        deadline = time.monotonic() + scale(60, 300)
        # Supervise as `offload worker --processes 2` would, feeding normal jobs all along,
        # until the pill is dead (or the bound is broken: a fifth crash ends the loop).
        while time.monotonic() < deadline and len(crashed) <= MAX_RECOVERIES + 1:
            normal += run.enqueue(10, seconds=0.02)
            for i, w in enumerate(workers):
                if not w.alive():
                    crashed.append(w)
                    workers[i] = run.start_worker()
            if _final(url, [pill]):
                break
            time.sleep(0.3)
        normal += run.enqueue(10, seconds=0.02)
        assert run.wait_final(normal, timeout=60), "normal jobs stopped flowing"
        run.stop_workers()
        rec = _record(url, pill)
        report = run.report(backend=fault_backend.name)

    runs = Ledger.read(run.ledger_dir).by_job[pill]
    print(
        f"\n[kill pill, {fault_backend.name}] executions {len(runs)}, "
        f"worker crashes {len(crashed)}, state {rec.state}, recoveries {rec.recoveries}, "
        f"normal jobs {len(normal)}: {report.summary()}"
    )
    assert rec.state == "dead" and rec.errors[-1].reason == "lease_expired", rec.errors
    assert rec.recoveries == MAX_RECOVERIES
    assert len(runs) <= MAX_RECOVERIES + 1, "the pill ran more often than its recoveries allow"
    assert len(crashed) <= MAX_RECOVERIES + 1
    assert all(w.proc.returncode == -9 for w in crashed)
    assert {r.pid for r in runs} == {w.pid for w in crashed}, "every crash was the pill's"
    # Other jobs kept flowing: every one succeeded, some while the pill was still cycling.
    outcomes = fetch_outcomes_sync(url, normal)
    assert all(o is not None and o.state == "succeeded" for o in outcomes.values())
    ledger = Ledger.read(run.ledger_dir)
    last_pill_start = max(r.started for r in runs)
    during = [
        r for j in normal for r in ledger.by_job[j] if runs[0].started < r.started < last_pill_start
    ]
    assert during, "no normal job ran between the pill's first and last execution"
    assert report.lost == 0 and report.unexpected == 0


# --------------------------------------------------------------------------- exception pill


@pytest.mark.timeout(600 if LONG else 60)
def test_a_failing_job_gets_exactly_its_retries_with_backoff_then_the_dlq(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    retries = 2
    policy = RetryPolicy()  # the probe's tasks use the default backoff
    with FaultRun(fault_backend.url, tmp_path, lease_s=5.0) as run:
        run.wait_ready(run.start_worker())
        [pill] = run.enqueue(1, mode="raise", options={"retries": retries})
        normal = run.enqueue(50, seconds=0.01)
        assert run.wait_final([pill, *normal], timeout=30)
        run.stop_workers()
        rec = _record(fault_backend.url, pill)

    runs = Ledger.read(run.ledger_dir).by_job[pill]
    assert [r.attempt for r in runs] == list(range(1, retries + 2)), "one run per attempt"
    assert all(r.failed for r in runs)
    gaps = [b.started - a.ended for a, b in itertools.pairwise(runs) if a.ended]
    print(f"\n[exception pill, {fault_backend.name}] waits between attempts {gaps}")
    for n, gap in enumerate(gaps, 1):
        nominal = policy.base * policy.factor ** (n - 1)  # jitter: [nominal / 2, nominal]
        assert nominal / 2 - 0.05 <= gap <= nominal + 1.0, f"retry {n} after {gap:.2f}s"
    assert rec.state == "dead" and rec.attempts == retries + 1
    assert [e.reason for e in rec.errors] == ["exception"] * (retries + 1)
    for e in rec.errors:
        assert e.type.endswith("ProbeError") and "the probe failed on purpose" in e.message
        assert "Traceback" in e.traceback and "_misbehave" in e.traceback
    outcomes = fetch_outcomes_sync(fault_backend.url, normal)
    assert all(o is not None and o.state == "succeeded" for o in outcomes.values())


# --------------------------------------------------------------------------- hang pill

HANG_JOBS = scale(400, 2000)
HANG_CONCURRENCY = 10
HANG_LIMIT_S = 1.0


def _throughput(run: FaultRun, ids: list[str]) -> float:
    """Jobs per second from the first start to the last end of ``ids`` (the ledger)."""
    ledger = Ledger.read(run.ledger_dir)
    runs = [r for j in ids for r in ledger.by_job[j]]
    first = min(r.started for r in runs)
    last = max(r.ended or r.started for r in runs)
    return len(ids) / (last - first)


@pytest.mark.timeout(600 if LONG else 90)
def test_a_hanging_job_is_stopped_at_its_limit_and_the_rest_keeps_its_pace(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    with FaultRun(fault_backend.url, tmp_path, lease_s=5.0, concurrency=HANG_CONCURRENCY) as run:
        run.wait_ready(run.start_worker())
        run.wait_final(run.enqueue(20, seconds=0.05), timeout=30)  # warm up
        alone = run.enqueue(HANG_JOBS, seconds=0.05)
        assert run.wait_final(alone, timeout=60)
        # The machine is shared: normal throughput is measured before and after.
        # Two pills (async, and in a killable pool process), then the same load again.
        pills = run.enqueue(1, mode="hang", options={"timeout": HANG_LIMIT_S})
        pills += run.enqueue(
            1, task="faults.probe_process", mode="hang", options={"timeout": HANG_LIMIT_S}
        )
        beside = run.enqueue(HANG_JOBS, seconds=0.05)
        assert run.wait_final([*pills, *beside], timeout=60)
        again = run.enqueue(HANG_JOBS, seconds=0.05)
        assert run.wait_final(again, timeout=60)
        assert len(run.workers) == 1 and run.workers[0].alive(), "the worker died"
        run.stop_workers()
        normal_rate = (_throughput(run, alone) + _throughput(run, again)) / 2
        pill_rate = _throughput(run, beside)
        records = [_record(fault_backend.url, p) for p in pills]

    print(
        f"\n[hang pill, {fault_backend.name}] {normal_rate:.0f} jobs/s alone, "
        f"{pill_rate:.0f} jobs/s beside two hanging jobs ({pill_rate / normal_rate:.0%})"
    )
    for rec in records:
        assert rec.state == "dead" and rec.errors[-1].reason == "timeout", rec.errors
        assert rec.started_at is not None and rec.finished_at is not None
        assert HANG_LIMIT_S <= rec.finished_at - rec.started_at <= HANG_LIMIT_S + 3.0
    assert pill_rate >= 0.8 * normal_rate
