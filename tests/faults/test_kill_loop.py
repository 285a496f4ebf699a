"""G1-G3: a worker SIGKILLed every 2 s and restarted loses nothing, re-runs a bounded
number of jobs, and its jobs are runnable again within lease + 2 x reaper interval + 1 s.

"Runnable again" is the broker's recovery of the lease (its ``lease_expired`` record);
the report also gives the time until the job *started* again, which adds the wait behind
the backlog (a recovered job is due now, so it queues behind jobs due earlier).

Duplicates: a kill re-runs the jobs its worker held without a written outcome: those
running and those finished whose outcome was still in its group commit. A slot stays
taken until the outcome is written, so a worker never holds more than ``concurrency``
such jobs, and the bound ``kills x concurrency`` holds for all re-runs together
(``reruns_running + reruns_unsettled``); every duplicate must be explained by a kill.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.faults.harness import LONG, scale
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults.harness.fixtures import FaultBackend

pytestmark = pytest.mark.slow

JOBS = scale(2000, 20000)
KILLS = scale(5, 40)
KILL_EVERY_S = 2.0
CONCURRENCY = 10
JOB_S = 0.1
LEASE_S = 2.0
REAPER_S = min(5.0, LEASE_S / 4)  # the worker's default recover_every_s
LATENCY_BOUND_S = LEASE_S + 2 * REAPER_S + 1.0  # G3: max
LATENCY_P50_S = LEASE_S + REAPER_S + 0.5  # G3: p50


@pytest.mark.timeout(1500 if LONG else 150)
def test_kill_loop(fault_backend: FaultBackend, tmp_path: Path) -> None:
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, concurrency=CONCURRENCY) as run:
        ids = run.enqueue(JOBS, seconds=JOB_S)
        run.start_worker()
        victim = run.start_worker()
        for _ in range(KILLS):
            time.sleep(KILL_EVERY_S)
            assert run.wait_in_flight(victim), "the victim never held a job"
            run.kill(victim)
            victim = run.start_worker()
        assert run.wait_final(ids, timeout=scale(120, 600)), "the queue did not drain"
        run.stop_workers()
        report = run.report(backend=fault_backend.name, latency_bound_s=LATENCY_BOUND_S)
    print(f"\n[kill loop, {fault_backend.name}] {report.summary()}\n{report.to_json()}")
    assert report.acknowledged == JOBS
    assert report.valid, report.summary()
    assert report.kills == KILLS
    assert report.unexplained_duplicates == 0, report.summary()
    reruns = report.reruns_running + report.reruns_unsettled
    assert reruns <= report.kills * CONCURRENCY, report.summary()
    assert report.orphaned > 0
    assert report.recovery_max_s is not None and report.recovery_p50_s is not None
    assert report.recovery_max_s <= LATENCY_BOUND_S, report.summary()
    assert report.recovery_p50_s <= LATENCY_P50_S, report.summary()
