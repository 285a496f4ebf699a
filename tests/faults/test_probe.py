"""The probe's modes do what the other fault tests rely on (SQLite, one real worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.faults.harness.checker import fetch_outcomes_sync
from tests.faults.harness.processes import FaultRun

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


@pytest.mark.timeout(90)
def test_probe_modes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'probe.db'}"
    with FaultRun(url, tmp_path, lease_s=5.0, concurrency=4) as run:
        [raised] = run.enqueue(1, mode="raise")
        [flaky] = run.enqueue(1, mode="raise", times=1, options={"retries": 1})
        [crashed] = run.enqueue(1, task="faults.probe_process", mode="kill")
        [hungry] = run.enqueue(1, task="faults.probe_sync", mode="memory", mb=2048)
        [hung] = run.enqueue(1, mode="hang", options={"timeout": 0.5})
        ids = [raised, flaky, crashed, hungry, hung]
        worker = run.start_worker("--process-pool", "1", memory_limit_mb=1536)
        assert run.wait_final(ids, timeout=60), worker.output()[-3000:]
        run.stop_workers()
        outcomes = fetch_outcomes_sync(run.url, ids)
        report = run.report()
    states = {i: (o.state, o.reason) for i, o in outcomes.items() if o is not None}
    assert states[raised] == ("dead", "exception")
    assert states[flaky][0] == "succeeded"
    assert states[crashed] == ("dead", "process_crashed")
    assert states[hungry] == ("dead", "exception")  # MemoryError under the limit
    assert states[hung] == ("dead", "timeout")
    assert report.valid and report.executions == 6  # the flaky job ran twice
    assert report.duplicate_starts == 0  # attempts 1 and 2 are different attempts
