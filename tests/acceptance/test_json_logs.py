"""A worker run with ``--log-format json`` writes one parseable object per line, and every
line about a job names the job, its task and its attempt."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.acceptance.harness import run_cli
from tests.acceptance.logapp import add, app, flaky

if TYPE_CHECKING:
    from pathlib import Path


async def enqueue_jobs(url: str) -> list[str]:
    app.use_broker(url)
    try:
        retried = await flaky.enqueue()
        bad = await add.enqueue("not", "numbers", "too many")  # type: ignore[call-arg]
        return [retried.id, bad.id]
    finally:
        await app.close()


@pytest.mark.slow
async def test_worker_json_logs_carry_job_fields(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    ids = await enqueue_jobs(url)
    done = run_cli(url, "worker", "tests.acceptance.logapp:app", "--burst", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    for doc in lines:
        assert {"ts", "level", "logger", "message"} <= doc.keys()
    about_jobs = [doc for doc in lines if "job_id" in doc]
    for doc in about_jobs:
        assert isinstance(doc["task"], str) and doc["task"], doc
        assert isinstance(doc["attempt"], int) and doc["attempt"] >= 1, doc
        assert doc["action"], doc
    actions = {(doc["action"], doc["job_id"]) for doc in about_jobs}
    assert ("job_retried", ids[0]) in actions
    assert ("job_dead", ids[0]) in actions
    assert ("job_dead", ids[1]) in actions
    assert {"worker_started", "worker_stopped"} <= {doc.get("action") for doc in lines}
