"""Workers stopped every way a deployment stops them, on SQLite, Redis and PostgreSQL.

* G1-G4: every worker SIGKILLed at once, again and again: nothing lost, re-runs bounded,
  leases recovered by the restarted workers within lease + 2 x reaper + 1 s counted from
  the moment the first replacement serves (before that no one is left to recover).
* G2: a graceful SIGTERM loop with a grace longer than the jobs: 0 duplicates, and the
  stopped worker leaves no lease behind (no job ever waits for lease expiry).
* A shutdown past its grace period: the late jobs are cancelled and released at once
  (queued, not running), their attempt is given back, and the next run is attempt 1.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.faults.harness import LONG, scale
from tests.faults.harness.checker import fetch_outcomes_sync
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults.harness.fixtures import FaultBackend

pytestmark = pytest.mark.slow

CONCURRENCY = 10
LEASE_S = 2.0
REAPER_S = min(5.0, LEASE_S / 4)
LATENCY_BOUND_S = LEASE_S + 2 * REAPER_S + 1.0


@pytest.mark.timeout(1200 if LONG else 120)
def test_all_workers_killed_repeatedly(fault_backend: FaultBackend, tmp_path: Path) -> None:
    rounds = scale(2, 15)
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, concurrency=CONCURRENCY) as run:
        ids = run.enqueue(scale(800, 20000), seconds=0.1)
        workers = [run.start_worker(), run.start_worker()]
        boot = 0.0
        for _ in range(rounds):
            for w in workers:
                assert run.wait_in_flight(w), "a worker never held a job"
            killed = time.monotonic()
            for w in workers:
                run.kill(w)
            workers = [run.start_worker(), run.start_worker()]
            run.wait_ready(workers[0])
            boot = max(boot, time.monotonic() - killed)
            time.sleep(1.0)
        assert run.wait_final(ids, timeout=scale(120, 600)), "the queue did not drain"
        run.stop_workers()
        report = run.report(backend=fault_backend.name)
    print(f"\n[all killed, {fault_backend.name}] {report.summary()}")
    assert report.valid, report.summary()
    assert report.kills == 2 * rounds
    assert report.unexplained_duplicates == 0, report.summary()
    assert report.reruns_running <= report.kills * CONCURRENCY, report.summary()
    assert report.recovery_max_s is not None
    # With no worker left, recovery also waits for a replacement to start.
    assert report.recovery_max_s <= LATENCY_BOUND_S + boot, (boot, report.summary())


@pytest.mark.timeout(1200 if LONG else 120)
def test_graceful_sigterm_loop(fault_backend: FaultBackend, tmp_path: Path) -> None:
    stops = scale(2, 20)
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, grace_s=10.0) as run:
        ids = run.enqueue(scale(300, 10000), seconds=0.2)
        run.start_worker()
        victim = run.start_worker()
        for _ in range(stops):
            assert run.wait_in_flight(victim), "the victim never held a job"
            started = time.monotonic()
            assert run.terminate(victim) == 0, victim.output()[-2000:]
            assert time.monotonic() - started < 0.2 + 5.0, "shutdown waited for more than its jobs"
            assert run.running_on(victim) == [], "the stopped worker left leases behind"
            victim = run.start_worker()
        assert run.wait_final(ids, timeout=scale(120, 600)), "the queue did not drain"
        run.stop_workers()
        report = run.report(backend=fault_backend.name)
        outcomes = fetch_outcomes_sync(run.url, ids)
    print(f"\n[SIGTERM loop, {fault_backend.name}] {report.summary()}")
    assert report.valid, report.summary()
    assert report.duplicate_starts == 0, report.summary()
    assert all(o is not None and o.recoveries == 0 for o in outcomes.values()), (
        "a job waited for its lease to expire"
    )


@pytest.mark.timeout(120)
def test_shutdown_past_grace_releases(fault_backend: FaultBackend, tmp_path: Path) -> None:
    jobs = 5
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, grace_s=1.0) as run:
        ids = run.enqueue(jobs, seconds=3.0)
        worker = run.start_worker()
        assert run.wait_in_flight(worker, at_least=jobs)
        started = time.monotonic()
        assert run.terminate(worker) == 0, worker.output()[-2000:]
        # Before the jobs could have ended: they were cut short at the grace period.
        assert time.monotonic() - started < 1.0 + 1.5, "shutdown overran its grace period"
        released = fetch_outcomes_sync(run.url, ids)
        assert {o.state for o in released.values() if o} == {"queued"}, released
        assert all(o is not None and o.attempts == 0 for o in released.values()), released
        run.start_worker(grace_s=10.0)
        assert run.wait_final(ids, timeout=60)
        run.stop_workers()
        report = run.report(backend=fault_backend.name)
        final = fetch_outcomes_sync(run.url, ids)
    print(f"\n[past grace, {fault_backend.name}] {report.summary()}")
    assert report.valid, report.summary()
    assert report.completed == jobs
    assert report.duplicate_starts == jobs  # each cut short once, run again as attempt 1
    assert report.duplicate_ends == 0
    assert report.unexplained_duplicates == 0, report.summary()
    assert report.recovery_max_s is None, "a job waited for its lease instead of a release"
    assert all(o is not None and (o.attempts, o.recoveries) == (1, 0) for o in final.values())
    assert "released" in worker.output() or "releasing" in worker.output()
