"""Structured logs: every job line carries its id, task and attempt; JSON by flag."""

from __future__ import annotations

import json
import logging

from offload.logs import JsonFormatter, TextFormatter


def record() -> logging.LogRecord:
    rec = logging.LogRecord(
        "offload.worker", logging.WARNING, __file__, 1, "job %s failed", ("j1",), None
    )
    rec.__dict__.update({"action": "job_dead", "job_id": "j1", "task": "t.add", "attempt": 3})
    return rec


def test_json_lines_carry_the_job_fields() -> None:
    doc = json.loads(JsonFormatter().format(record()))
    assert doc["message"] == "job j1 failed"
    assert (doc["action"], doc["job_id"], doc["task"], doc["attempt"]) == (
        "job_dead",
        "j1",
        "t.add",
        3,
    )
    assert doc["level"] == "warning" and doc["logger"] == "offload.worker"


def test_text_lines_append_key_values() -> None:
    line = TextFormatter().format(record())
    assert "job j1 failed" in line and "job_id=j1" in line and "task=t.add" in line
