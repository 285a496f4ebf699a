"""The ``offload`` command as a user runs it, in real processes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from offload import JobState
from offload.brokers import open_broker
from tests.acceptance.harness import Ledger, run_cli, start_worker, stop, wait_until
from tests.backends import backend_names

APP = "tests.acceptance.crashapp:app"


@pytest.fixture(params=backend_names(shared_only=True))
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("app_url_for")(request.param)


async def _state(url: str, job_id: str) -> JobState | None:
    broker = open_broker(url)
    await broker.open()
    try:
        rec = await broker.get_job(job_id)
        return None if rec is None else rec.state
    finally:
        await broker.close()


def _job_id(out: str) -> str:
    return out.split("enqueued ")[1].split()[0]


def _enqueue(url: str, *args: str) -> str:
    """Enqueue through the CLI and return the job id (showing stderr if it failed)."""
    done = run_cli(url, "enqueue", *args)
    assert done.returncode == 0, done.stderr
    return _job_id(done.stdout)


def test_enqueue_work_status_retry_purge(url: str, tmp_path: Path) -> None:
    ok = run_cli(url, "enqueue", "crash.work", "--args", "[1, 0.01]", "--app", APP)
    assert ok.returncode == 0, ok.stderr
    good = _job_id(ok.stdout)
    bad = _enqueue(url, "crash.work", "--args", '["x"]', "--app", APP)
    unknown = _enqueue(url, "no.such.task", "--queue", "crash")
    run = run_cli(url, "worker", APP, "-Q", "crash", "--burst", OFFLOAD_TEST_LEDGER=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert asyncio.run(_state(url, good)) is JobState.SUCCEEDED
    assert asyncio.run(_state(url, bad)) is JobState.DEAD
    assert asyncio.run(_state(url, unknown)) is JobState.DEAD

    status = run_cli(url, "status")
    assert status.returncode == 0
    line = next(x for x in status.stdout.splitlines() if x.strip("│ ").startswith("crash"))
    assert "1" in line and "2" in line  # 1 succeeded, 2 dead

    dead = run_cli(url, "jobs", "--state", "dead")
    assert bad in dead.stdout and unknown in dead.stdout and "bad_arguments" in dead.stdout

    shown = run_cli(url, "job", unknown)
    assert "unknown_task" in shown.stdout and "no.such.task" in shown.stdout

    again = run_cli(url, "retry", "--all-dead")
    assert again.returncode == 0 and "requeued 2 job(s)" in again.stdout
    assert asyncio.run(_state(url, bad)) is JobState.QUEUED

    purged = run_cli(url, "purge", "crash", "--yes")
    assert "deleted 2 job(s)" in purged.stdout
    assert asyncio.run(_state(url, bad)) is None


def test_enqueue_and_wait_prints_the_outcome(url: str, tmp_path: Path) -> None:
    worker = start_worker(url, tmp_path, "-Q", "crash")
    try:
        out = run_cli(
            url, "enqueue", "crash.work", "--args", "[7, 0]", "--app", APP, "--wait", "20"
        )
        assert out.returncode == 0, out.stderr
        assert "succeeded" in out.stdout and "result    7" in out.stdout
    finally:
        assert stop(worker) == 0


def test_sigterm_finishes_short_jobs_and_releases_long_ones(url: str, tmp_path: Path) -> None:
    long_job = _enqueue(url, "crash.work", "--args", "[1, 60]", "--app", APP)
    worker = start_worker(url, tmp_path, "-Q", "crash", "--grace", "1")
    assert wait_until(lambda: asyncio.run(_state(url, long_job)) is JobState.RUNNING, 20)
    started = time.monotonic()
    code = stop(worker, signal.SIGTERM)
    assert code == 0
    assert time.monotonic() - started < 10
    assert asyncio.run(_state(url, long_job)) is JobState.QUEUED, "released for another worker"


def test_supervisor_restarts_a_killed_child_and_stops_cleanly(url: str, tmp_path: Path) -> None:
    ids = [_enqueue(url, "crash.work", "--args", "[1, 0.3]", "--app", APP) for _ in range(6)]
    sup = start_worker(url, tmp_path, "-Q", "crash", "-c", "2", "--processes", "2", "--lease", "2")
    try:
        assert wait_until(lambda: len(list(tmp_path.glob("*.log"))) >= 2, 30), "two children ran"
        first_pids = {int(p.stem) for p in tmp_path.glob("*.log")}
        import os

        os.kill(min(first_pids), signal.SIGKILL)
        more = [_enqueue(url, "crash.work", "--args", "[1, 0.05]", "--app", APP) for _ in range(20)]

        def done() -> bool:
            return all(asyncio.run(_state(url, j)) is JobState.SUCCEEDED for j in ids + more)

        assert wait_until(done, 60), "the restarted child and its sibling drained the queue"
        pids = {int(p.stem) for p in tmp_path.glob("*.log")}
        assert len(pids - first_pids) >= 1 or len(Ledger.read(tmp_path).ends) == 26
    finally:
        assert stop(sup, signal.SIGTERM, timeout=60) == 0


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    wrong = run_cli("mysql://nope", "status")
    assert wrong.returncode == 2
    assert "Unknown broker URL" in wrong.stderr and "Traceback" not in wrong.stderr
    no_app = run_cli(f"sqlite:///{tmp_path / 'x.db'}", "worker", "nosuchmodule:app")
    assert no_app.returncode == 2
    assert "Cannot import 'nosuchmodule'" in no_app.stderr and "Traceback" not in no_app.stderr
    bad_json = run_cli(f"sqlite:///{tmp_path / 'x.db'}", "enqueue", "t", "--args", "[1,")
    assert bad_json.returncode == 2 and "--args must be JSON" in bad_json.stderr


def test_db_migrate_creates_then_leaves_the_schema(app_url_for: object) -> None:
    url = app_url_for("postgres")  # type: ignore[operator]
    first = run_cli(url, "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied migration(s)" in first.stdout
    again = run_cli(url, "db", "migrate")
    assert "already up to date" in again.stdout
    memory = run_cli("memory://", "db", "migrate")
    assert "nothing to migrate" in memory.stdout


def test_a_worker_started_before_its_broker_waits_for_it(tmp_path: Path) -> None:
    """Containers start together: the worker retries the broker until it answers."""
    import shutil
    import socket
    import subprocess

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0?prefix=offload-late"
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    worker = start_worker(url, ledger, "-Q", "crash", "--connect-timeout", "60")
    server = None
    try:
        time.sleep(2)
        assert worker.poll() is None, "the worker waits instead of exiting"
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        job = _enqueue(url, "crash.work", "--args", "[1, 0]", "--app", APP)
        assert wait_until(lambda: asyncio.run(_state(url, job)) is JobState.SUCCEEDED, 30)
    finally:
        assert stop(worker) == 0
        if server is not None:
            server.terminate()
            server.wait()
