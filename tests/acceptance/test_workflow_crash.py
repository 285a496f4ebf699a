"""A chain survives its workers being SIGKILLed in the middle of its steps."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from offload.workflows import WorkflowHandle, chain
from tests.acceptance import schedapp
from tests.acceptance.harness import ROOT, Ledger, env_for, offload_cmd, stop, wait_until
from tests.backends import backend_names

pytestmark = pytest.mark.slow

STEPS = 12
KILLS = 3


def start_worker(url: str, ledger: Path) -> subprocess.Popen[bytes]:
    args = ("-Q", "flow", "--lease", "2", "--grace", "1")
    with (ledger.parent / f"worker-{time.monotonic_ns()}.err").open("wb") as stderr:
        return subprocess.Popen(
            offload_cmd("worker", "tests.acceptance.schedapp:app", *args),
            env=env_for(url, ledger),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def _start(url: str) -> str:
    schedapp.app._override = None
    schedapp.app.use_broker(url)
    try:
        steps = [schedapp.step.s(0, 1)] + [schedapp.step.s(i) for i in range(2, STEPS + 1)]
        return (await chain(*steps).enqueue()).id
    finally:
        await schedapp.app.close()


async def _result(url: str, flow_id: str) -> tuple[int, list[int]]:
    schedapp.app._override = None
    schedapp.app.use_broker(url)
    try:
        flow = WorkflowHandle(schedapp.app, flow_id)
        value = await flow.result(timeout=90)
        return value, [s.attempts for s in await flow.steps()]
    finally:
        await schedapp.app.close()


def running_step(ledger_dir: Path) -> tuple[str, int] | None:
    """The step started last and not finished yet, and the pid running it."""
    ledger = Ledger.read(ledger_dir)
    open_runs = [
        (job_id, pid)
        for job_id, starts in ledger.starts.items()
        for _, pid in starts[len(ledger.ends.get(job_id, [])) :]
    ]
    return open_runs[-1] if open_runs else None


@pytest.mark.parametrize("backend", backend_names(shared_only=True))
@pytest.mark.timeout(180)
def test_a_chain_survives_sigkilled_workers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("app_url_for")(backend)
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    workers = [start_worker(url, ledger_dir), start_worker(url, ledger_dir)]
    flow_id = asyncio.run(_start(url))
    killed: list[tuple[str, int]] = []
    try:
        for _ in range(KILLS):
            seen = {j for j, _ in killed}
            assert wait_until(
                lambda seen=seen: (r := running_step(ledger_dir)) is not None and r[0] not in seen,
                timeout=30,
                interval=0.02,
            )
            victim = running_step(ledger_dir)
            assert victim is not None
            proc = next(w for w in workers if w.pid == victim[1])
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed.append(victim)
            workers.remove(proc)
            workers.append(start_worker(url, ledger_dir))
            time.sleep(0.5)
        value, attempts = asyncio.run(_result(url, flow_id))
    finally:
        for w in workers:
            stop(w)
    assert value == sum(range(1, STEPS + 1))
    assert len(attempts) == STEPS
    ledger = Ledger.read(ledger_dir)
    for job_id, pid in killed:
        runs = ledger.starts[job_id]
        assert len(runs) == 2 and runs[0][1] == pid, f"{job_id} re-ran once after the kill"
        assert len(ledger.ends[job_id]) == 1
    others = set(ledger.starts) - {j for j, _ in killed}
    assert all(len(ledger.starts[j]) == 1 for j in others), "no other step ran twice"
    print(f"\n[{backend}] chain of {STEPS} steps, {KILLS} workers SIGKILLed mid-step: result ok")
