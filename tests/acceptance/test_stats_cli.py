"""``offload stats`` and ``offload metrics`` as a user runs them."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from offload.metrics.report import StatsReport
from tests.acceptance import rateapp
from tests.acceptance.harness import ROOT, env_for, offload_cmd, run_cli, wait_until
from tests.backends import backend_names

APP = "tests.acceptance.rateapp:app"


@pytest.fixture(params=backend_names(shared_only=True))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = request.getfixturevalue("app_url_for")(request.param)
    asyncio.run(_enqueue(url))
    done = run_cli(url, "worker", APP, "-Q", "rl", "--burst", OFFLOAD_TEST_LEDGER=str(tmp_path))
    assert done.returncode == 0, done.stderr
    return url


async def _enqueue(url: str) -> None:
    rateapp.app._override = None
    rateapp.app.use_broker(url)
    try:
        await rateapp.capped.enqueue_many([(i, 0.01) for i in range(20)])
    finally:
        await rateapp.app.close()


def test_stats_prints_the_analytics(url: str) -> None:
    shown = run_cli(url, "stats", "--sample", "0.2")
    assert shown.returncode == 0, shown.stderr
    assert "λ/s" in shown.stdout and "rl" in shown.stdout and "predictions" in shown.stdout
    as_json = run_cli(url, "stats", "--json", "--sample", "0.2", "--window", "600")
    report = msgspec.json.decode(as_json.stdout, type=StatsReport)
    q = report.queue("rl")
    assert q is not None and q.service.count == 20 and q.pending == 0
    assert q.service.p50 is not None and q.service.p50 >= 0.01
    assert report.task("rl.capped") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_serves_prometheus_text(url: str, tmp_path: Path) -> None:
    port = _free_port()
    with (tmp_path / "metrics.err").open("wb") as err:
        proc = subprocess.Popen(
            offload_cmd("metrics", "--port", str(port), "--host", "127.0.0.1"),
            env=env_for(url),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    body = b""

    def scraped() -> bool:
        nonlocal body
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                body = r.read()
        except OSError:
            return False
        return True

    try:
        assert wait_until(scraped, timeout=30), (tmp_path / "metrics.err").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    text = body.decode()
    assert 'offload_jobs_enqueued_total{queue="rl",task="rl.capped"} 20.0' in text
    assert 'offload_jobs_finished_total{outcome="succeeded",queue="rl",task="rl.capped"} 20.0' in (
        text
    )
    assert "# TYPE offload_job_service_seconds summary" in text
    assert code == 0
    assert "serving metrics" in (tmp_path / "metrics.err").read_text()


def test_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    started = time.monotonic()
    down = run_cli("redis://127.0.0.1:1/0", "metrics", "--port", "0", timeout=60)
    assert down.returncode == 2 and "error:" in down.stderr and "Traceback" not in down.stderr
    assert time.monotonic() - started < 60
    bad = run_cli("nonsense://x", "stats")
    assert bad.returncode == 2 and "Unknown broker URL" in bad.stderr
