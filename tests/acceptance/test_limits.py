"""Rate and concurrency limits hold across real ``offload worker`` processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from offload.brokers import open_broker
from tests.acceptance import rateapp
from tests.acceptance.harness import ROOT, env_for, offload_cmd, stop
from tests.backends import backend_names

pytestmark = pytest.mark.slow

JOBS = 500
RATE = 50.0


def start_workers(
    url: str, ledger: Path, n: int = 2, concurrency: int = 10
) -> list[subprocess.Popen[bytes]]:
    cmd = offload_cmd("worker", "tests.acceptance.rateapp:app", "-Q", "rl", "-c", str(concurrency))
    procs = []
    for i in range(n):
        with (ledger / f"worker-{i}.err").open("wb") as err:
            procs.append(
                subprocess.Popen(
                    [*cmd, "--log-level", "WARNING"],
                    env=env_for(url, ledger),
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    return procs


def _errors(folder: Path) -> str:
    return "\n".join(p.read_text() for p in folder.glob("worker-*.err"))


async def _run(url: str, enqueue: str, n: int, timeout: float) -> tuple[float, int]:
    """Wait for both workers, enqueue ``n`` jobs, wait until they all succeeded.

    Returns the seconds from enqueue to the last success, and the attempts started."""
    rateapp.app._override = None
    rateapp.app.use_broker(url)
    broker = open_broker(url)
    await broker.open()
    try:
        deadline = time.monotonic() + 60
        while len(await broker.workers()) < 2:
            assert time.monotonic() < deadline, "the worker processes did not start"
            await asyncio.sleep(0.1)
        task = rateapp.paced if enqueue == "paced" else rateapp.capped
        started = time.monotonic()
        await task.enqueue_many([(i,) for i in range(n)])
        while True:
            [stats] = await broker.stats(["rl"])
            if stats.counters.succeeded >= n:
                return time.monotonic() - started, stats.counters.started
            assert time.monotonic() - started < timeout, stats
            await asyncio.sleep(0.05)
    finally:
        await broker.close()
        await rateapp.app.close()


def _ledger(folder: Path) -> list[tuple[str, str, int, float]]:
    rows = []
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            kind, job_id, pid, at = line.split()
            rows.append((kind, job_id, int(pid), float(at)))
    return rows


def _max_in_window(times: list[float], span: float) -> int:
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture(params=backend_names(shared_only=True))
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("app_url_for")(request.param)


@pytest.mark.timeout(180)
def test_rate_limit_across_two_worker_processes(url: str, tmp_path: Path) -> None:
    procs = start_workers(url, tmp_path)
    try:
        elapsed, attempts = asyncio.run(_run(url, "paced", JOBS, timeout=60))
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0], _errors(tmp_path)
    assert JOBS / RATE * 0.9 <= elapsed <= JOBS / RATE * 1.1, f"took {elapsed:.2f}s"
    starts = [at for kind, _, _, at in _ledger(tmp_path) if kind == "start"]
    print(f"rate test: {elapsed:.2f}s, peak {_max_in_window(starts, 1.0)}/s, {attempts} claims")
    assert len(starts) == JOBS
    assert len({pid for _, _, pid, _ in _ledger(tmp_path)}) == 2, "both processes ran jobs"
    assert _max_in_window(starts, 1.0) <= RATE + 5 + 3, "50/s, a burst of 5, and jitter"
    assert attempts - JOBS <= JOBS // 10, f"{attempts - JOBS} claims were handed back"


@pytest.mark.timeout(120)
def test_concurrency_limit_across_two_worker_processes(url: str, tmp_path: Path) -> None:
    """Two slots per process and a limit of 3: the limit is only reached with jobs running
    in both processes at once, and never passed though they could run 4."""
    procs = start_workers(url, tmp_path, concurrency=2)
    try:
        asyncio.run(_run(url, "capped", 30, timeout=60))
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0], _errors(tmp_path)
    events = sorted((at, 1 if kind == "start" else -1) for kind, _, _, at in _ledger(tmp_path))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 3, "at most 3 at once across both processes (4 slots), and the limit is used"
    assert len({pid for _, _, pid, _ in _ledger(tmp_path)}) == 2
