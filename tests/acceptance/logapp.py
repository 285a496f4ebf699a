"""An app whose jobs produce every kind of job log line: retried, dead, bad arguments."""

from __future__ import annotations

from offload import App, constant

app = App(default_queue="logs")


@app.task(name="logs.flaky", retries=1, backoff=constant(0.0))
def flaky() -> None:
    raise ValueError("always fails")


@app.task(name="logs.add")
def add(a: int, b: int) -> int:
    return a + b
