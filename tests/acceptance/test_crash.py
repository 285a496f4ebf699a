"""At-least-once across real worker crashes: SIGKILL a worker again and again."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from offload import App, JobState
from offload.brokers import open_broker
from tests.acceptance import crashapp
from tests.acceptance.harness import Ledger, start_worker, stop, wait_until
from tests.backends import backend_names

pytestmark = pytest.mark.slow

JOBS = 2000
KILLS = 5
CONCURRENCY = 10


async def _enqueue(url: str, n: int) -> list[str]:
    crashapp.app._override = None
    crashapp.app.use_broker(url)
    try:
        handles = await crashapp.work.enqueue_many([(i,) for i in range(n)])
        return [h.id for h in handles]
    finally:
        await crashapp.app.close()


async def _states(url: str, ids: list[str]) -> dict[str, JobState | None]:
    broker = open_broker(url)
    await broker.open()
    try:
        out: dict[str, JobState | None] = {}
        for i in range(0, len(ids), 500):
            batch = ids[i : i + 500]
            for job_id, rec in zip(batch, await broker.get_jobs(batch), strict=True):
                out[job_id] = None if rec is None else rec.state
        return out
    finally:
        await broker.close()


def _in_flight(ledger_dir: Path, pid: int) -> int:
    """Jobs process ``pid`` started and has not finished, from its ledger file."""
    path = ledger_dir / f"{pid}.log"
    if not path.exists():
        return 0
    started, ended = set(), set()
    for line in path.read_text().splitlines():
        kind, job_id, *_ = line.split()
        (started if kind == "start" else ended).add(job_id)
    return len(started - ended)


@pytest.mark.parametrize("backend", backend_names(shared_only=True))
@pytest.mark.timeout(300)
def test_sigkilled_worker_loses_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("app_url_for")(backend)
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    ids = asyncio.run(_enqueue(url, JOBS))
    args = ("-Q", "crash", "-c", str(CONCURRENCY), "--lease", "2", "--grace", "1")
    steady = start_worker(url, ledger_dir, *args)
    victim = start_worker(url, ledger_dir, *args)
    killed_pids = []
    try:
        for _ in range(KILLS):
            time.sleep(0.5)
            pid = victim.pid
            assert wait_until(lambda p=pid: _in_flight(ledger_dir, p) > 0, 30, 0.02), (
                "the victim never held a job"
            )
            killed_pids.append(victim.pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            victim = start_worker(url, ledger_dir, *args)

        def all_final() -> bool:
            states = asyncio.run(_states(url, ids))
            return all(s is JobState.SUCCEEDED for s in states.values())

        assert wait_until(all_final, timeout=120, interval=1.0), "not every job finished"
    finally:
        stop(victim)
        stop(steady)

    states = asyncio.run(_states(url, ids))
    lost = [j for j, s in states.items() if s is not JobState.SUCCEEDED]
    assert lost == [], f"{len(lost)} acknowledged jobs did not finish"
    ledger = Ledger.read(ledger_dir)
    assert set(ledger.ends) == set(ids), "every job ran to its end at least once"
    reruns = ledger.rerun()
    for job_id, starts in reruns.items():
        first_pid = starts[0][1]
        assert first_pid in killed_pids, f"{job_id} ran twice without its worker being killed"
    assert 0 < len(reruns) <= KILLS * CONCURRENCY
    print(
        f"\n[{backend}] {JOBS} jobs, {KILLS} SIGKILLs: lost 0, re-run {len(reruns)} "
        f"(bound {KILLS * CONCURRENCY})"
    )


def test_app_loads_from_cli_path() -> None:
    from offload.admin import load_app

    assert isinstance(load_app("tests.acceptance.crashapp:app"), App)
