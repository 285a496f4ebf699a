"""The cross-system benchmark's own machinery: the task's record, CPU of a process tree,
the medians and the table (the systems themselves are exercised by running it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))

import catalog  # noqa: E402
import procs  # noqa: E402
import record  # noqa: E402
import report  # noqa: E402


def test_records_from_forked_processes_are_all_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "records.bin"
    monkeypatch.setenv(record.ENV, str(path))
    record.record(0)
    pid = os.fork()
    if pid == 0:  # a forking worker's child: its own descriptor, the same file
        for i in range(1, 500):
            record.record(i)
        os._exit(0)
    for i in range(500, 1000):
        record.record(i)
    os.waitpid(pid, 0)
    record.record(0)  # a redelivered job counts once, at its first run
    runs = record.read(str(path))
    assert sorted(runs) == list(range(1000))
    assert path.stat().st_size == 1001 * record.RECORD.size


def test_tree_cpu_counts_a_busy_child_and_kill_session_ends_it() -> None:
    burn = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
    parent = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        assert procs.wait_until(lambda: len(procs.descendants(parent.pid)) == 2, 10)
        first = procs.tree_cpu(parent.pid)
        # The parent only waits: CPU that grows is the child's (however loaded the machine).
        assert procs.wait_until(lambda: procs.tree_cpu(parent.pid) - first > 0.2, 30, 0.05)
        own = procs._stat(parent.pid)
        assert own is not None and sum(int(f) for f in own[11:13]) / procs.CLK_TCK < 0.2
    finally:
        procs.kill_session(parent.pid)
        parent.wait(10)
    assert procs.descendants(parent.pid) == [parent.pid]  # only the reaped leader's id


def _run(system: str, drain: float, p99: float, **extra: object) -> dict[str, object]:
    return {
        "system": system, "enqueue_one": 1000.0, "enqueue_batch": None, "drain": drain,
        "cpu_us": 10.0, "p50_ms": 1.0, "p99_ms": p99, "send_p99_ms": 0.5,
        "settings": "s", **extra,
    }  # fmt: skip


def test_table_medians_ratios_targets_and_failures() -> None:
    systems = [catalog.BY_NAME[n] for n in ("floor_redis", "offload_redis", "celery", "rq")]
    runs = [
        *(_run("floor_redis", d, 1.0) for d in (100.0, 300.0, 200.0)),
        *(_run("offload_redis", d, 2.0) for d in (90.0, 50.0, 70.0)),
        _run("celery", 20.0, 4.0),
        {"system": "rq", "error": "worker exited with 1 during the drain\n--- tails ---"},
    ]
    table = report.summarise(systems, runs)
    assert table["floor_redis"]["drain"] == 200.0
    assert table["offload_redis"]["drain"] == 70.0
    assert table["rq"]["runs"] == 0
    meta = {
        "args": {"jobs": 10, "rate": 500.0, "runs": 3}, "started": 0.0, "cpus": 2,
        "load_before": [1.0], "load_after": [1.0], "load_during": [1.0, 1.0, 1.0],
        "servers": {"redis": "private"},
    }  # fmt: skip
    text = report.render(table, meta)
    assert "RQ                    FAILED: worker exited with 1 during the drain" in text
    assert "PASS Redis drain >= 3x fastest peer: 70.00 vs 60.00" in text
    assert "MISS Redis p99 ms <= best peer's" not in text  # 2.0 <= 4.0
    assert "MISS Redis drain >= 40% of floor: 70.00 vs 80.00" in text
    assert "offload (Redis): Celery 3.50x / 0.50x" in text
