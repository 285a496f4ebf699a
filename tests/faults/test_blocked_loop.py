"""G5: a long job on a healthy worker is never reclaimed, even when it blocks the loop.

An async task that calls blocking code freezes the worker's event loop. Leases are
renewed from a thread of their own (``offload.worker.heartbeat.LeaseKeeper``), so the
job keeps its lease while another worker's reaper runs every ``lease / 4``: it runs
exactly once, is never recovered, and the worker reports the blocked loop in its log.
A long job in a worker thread (a sync task) beside it is never reclaimed either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.faults.harness import LONG, scale
from tests.faults.harness.checker import fetch_outcomes_sync
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults.harness.fixtures import FaultBackend

pytestmark = pytest.mark.slow

LEASE_S = 1.0
LEASES_BLOCKED = scale(5, 10)


@pytest.mark.timeout(300 if LONG else 90)
def test_blocked_loop_keeps_its_lease(fault_backend: FaultBackend, tmp_path: Path) -> None:
    seconds = LEASES_BLOCKED * LEASE_S
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, concurrency=2) as run:
        # One claim takes both, in this order: the thread job starts before the loop blocks.
        ids = run.enqueue(1, task="faults.probe_sync", seconds=seconds)
        ids += run.enqueue(1, mode="block", seconds=seconds)
        owner = run.start_worker()
        assert run.wait_in_flight(owner, at_least=2), owner.output()
        run.start_worker()  # its reaper runs every lease / 4 while the loop is blocked
        assert run.wait_final(ids, timeout=seconds + 30)
        run.stop_workers()
        report = run.report(backend=fault_backend.name)
        outcomes = fetch_outcomes_sync(run.url, ids)
    print(f"\n[blocked loop, {fault_backend.name}] {report.summary()}")
    assert report.valid, report.summary()
    assert report.completed == 2
    assert report.duplicate_starts == 0, report.summary()
    assert all(o is not None and o.recoveries == 0 for o in outcomes.values()), outcomes
    assert "event loop has been blocked" in owner.output(), "the blocked loop went unreported"
