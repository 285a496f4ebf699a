"""Schedulers as real processes: three compete, the leader is SIGKILLed, every tick
still fires exactly once and a standby takes over within the lease."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from offload.brokers import open_broker
from tests.acceptance.harness import ROOT, env_for, offload_cmd, run_cli, stop, wait_until
from tests.backends import backend_names

pytestmark = pytest.mark.slow

APP = "tests.acceptance.schedapp:app"
LEASE = 2.0


def start_scheduler(url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            offload_cmd("scheduler", APP, "--lease", str(LEASE), "--log-format", "json"),
            env=env_for(url),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def leads(logs: list[Path]) -> list[tuple[float, int]]:
    """(time, pid) of every 'now leading' line the schedulers logged, oldest first."""
    out = []
    for path in logs:
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("action") == "scheduler_leading":
                    out.append((doc["ts"], int(doc["owner"].split(":")[1])))
    return sorted(out)


async def tick_ids(url: str) -> list[str]:
    broker = open_broker(url)
    await broker.open()
    try:
        page = await broker.list_jobs(name="sched.tick", limit=1000)
        return [rec.id for rec in page.jobs]
    finally:
        await broker.close()


def tick_time(job_id: str) -> float:
    stamp = job_id.removeprefix("tick:sched.tick:").removesuffix("Z")
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("backend", backend_names(shared_only=True))
@pytest.mark.timeout(120)
def test_three_schedulers_one_killed_every_tick_fires_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("app_url_for")(backend)
    logs = [tmp_path / f"scheduler-{i}.log" for i in range(3)]
    procs = {}
    for log in logs:
        proc = start_scheduler(url, log)
        procs[proc.pid] = proc
    try:
        assert wait_until(lambda: leads(logs), timeout=30), "no scheduler took the lead"
        [(_, leader)] = leads(logs)
        time.sleep(3.0)
        killed_at = time.time()
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait()
        assert wait_until(lambda: len(leads(logs)) == 2, timeout=LEASE * 5), "no takeover"
        took_over_at, successor = leads(logs)[1]
        time.sleep(3.0)
    finally:
        for proc in procs.values():
            stop(proc)
    assert successor != leader
    takeover = took_over_at - killed_at
    assert takeover <= LEASE + LEASE / 5 + 1.0, f"takeover took {takeover:.2f}s"

    ids = asyncio.run(tick_ids(url))
    assert len(ids) == len(set(ids)), "a tick has two job records"
    times = sorted(tick_time(i) for i in ids)
    expected = [times[0] + i for i in range(int(times[-1] - times[0]) + 1)]
    assert times == expected, "a tick is missing: the takeover lost one"
    assert times[0] <= killed_at - 2 and times[-1] >= took_over_at + 2, "window spans the kill"
    print(f"\n[{backend}] {len(ids)} ticks, each once; takeover {takeover:.2f}s (lease {LEASE}s)")

    listed = run_cli(url, "schedules", APP)
    assert listed.returncode == 0, listed.stderr
    assert "sched.tick" in listed.stdout and "every 1s" in listed.stdout


def test_scheduler_without_schedules_says_what_to_do(tmp_path: Path) -> None:
    done = run_cli(f"sqlite:///{tmp_path / 'x.db'}", "scheduler", "tests.acceptance.crashapp:app")
    assert done.returncode == 2
    assert "has no schedules" in done.stderr
