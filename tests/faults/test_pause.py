"""G2/G3: a worker frozen (SIGSTOP) for longer than its lease, then resumed (SIGCONT).

While it is frozen it cannot renew its leases: another worker recovers and re-runs its
jobs. When it wakes, the fencing token stops it two ways, whichever comes first: its
jobs finish and it tries to record their outcomes, which the broker refuses ("outcome of
job ... refused"), or a lease renewal that was in flight at the pause answers ``lost``
and it abandons the jobs ("lost the lease of job ..."). Either way no result from the
stale owner is ever accepted: stale commits 0 (the checker compares the run id in each
accepted result with the ledger and the pause).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import pytest

from tests.faults.harness import LONG, scale
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults.harness.fixtures import FaultBackend

pytestmark = pytest.mark.slow

CONCURRENCY = 5
LEASE_S = 2.0
REAPER_S = min(5.0, LEASE_S / 4)
PAUSE_S = 3 * LEASE_S
LATENCY_BOUND_S = LEASE_S + 2 * REAPER_S + 1.0


@pytest.mark.timeout(1200 if LONG else 120)
def test_paused_worker_is_fenced(fault_backend: FaultBackend, tmp_path: Path) -> None:
    pauses = scale(1, 5)
    with FaultRun(fault_backend.url, tmp_path, lease_s=LEASE_S, concurrency=CONCURRENCY) as run:
        ids = run.enqueue(scale(150, 1500), seconds=0.3)
        victim = run.start_worker()
        run.start_worker()
        for _ in range(pauses):
            assert run.wait_in_flight(victim, at_least=CONCURRENCY), "the victim was never busy"
            run.send(victim, signal.SIGSTOP)
            time.sleep(PAUSE_S)
            run.send(victim, signal.SIGCONT)
        assert run.wait_final(ids, timeout=scale(120, 600)), "the queue did not drain"
        run.stop_workers()
        report = run.report(backend=fault_backend.name)
    refused = victim.output().count("refused: its lease had expired")
    abandoned = victim.output().count("lost the lease of job")
    print(
        f"\n[pause, {fault_backend.name}] {report.summary()}; "
        f"late outcomes refused {refused}, jobs abandoned on a lost lease {abandoned}"
    )
    assert report.valid, report.summary()
    assert report.stale_commits == 0
    assert report.pauses == pauses
    assert report.orphaned >= CONCURRENCY * pauses
    assert report.unexplained_duplicates == 0, report.summary()
    assert report.reruns_running <= report.pauses * CONCURRENCY, report.summary()
    assert report.recovery_max_s is not None
    assert report.recovery_max_s <= LATENCY_BOUND_S, report.summary()
    assert refused + abandoned >= CONCURRENCY * pauses, "the woken worker was not fenced"
