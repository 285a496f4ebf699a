"""The Prometheus collector and ASGI app over every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from offload import App
from offload.brokers import Broker
from offload.errors import BrokerUnavailable
from offload.metrics.prometheus import BrokerCollector, metrics_app, render


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[App]:
    app = App(app_url)

    @app.task(name="prom.ok", queue="prom")
    async def ok(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    @app.task(name="prom.bad", queue="prom")
    async def bad() -> None:
        raise ValueError("no")

    await ok.enqueue_many([(i,) for i in range(20)])
    await bad.enqueue()
    await app.run_worker(queues=("prom",), burst=True, poll_s=0.05, concurrency=4)
    await ok.enqueue(99)  # one left waiting
    try:
        yield app
    finally:
        await app.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[name, frozenset(labels.items())]


async def test_metrics_follow_prometheus_conventions(app: App) -> None:
    collector = BrokerCollector(app.broker)
    await collector.refresh()
    found = samples(render(collector).decode())
    ok = {"queue": "prom", "task": "prom.ok"}
    assert value(found, "offload_jobs_enqueued_total", **ok) == 21
    assert value(found, "offload_jobs_finished_total", **ok, outcome="succeeded") == 20
    assert (
        value(found, "offload_jobs_finished_total", queue="prom", task="prom.bad", outcome="dead")
        == 1
    )
    assert value(found, "offload_job_service_seconds_count", **ok) == 20
    assert value(found, "offload_job_service_seconds_sum", **ok) >= 20 * 0.01
    assert value(found, "offload_job_time_in_system_seconds_count", **ok) == 20
    assert value(found, "offload_jobs_in_system_seconds_total", **ok) > 0
    assert value(found, "offload_jobs_in_system", **ok) == 1
    assert value(found, "offload_jobs", queue="prom", state="queued") == 1
    assert value(found, "offload_queue_oldest_pending_age_seconds", queue="prom") >= 0
    assert value(found, "offload_queue_service_seconds", queue="prom", quantile="0.5") >= 0.01
    assert (
        value(
            found,
            "offload_workers",
        )
        == 0
    )
    names = {name for name, _ in found}
    for name in names:
        assert name.startswith("offload_")
        if name.endswith("_total"):
            assert not name.endswith("_seconds") and "_total" not in name[:-6]


async def test_asgi_app_serves_the_metrics(app: App) -> None:
    status, headers, body = await call(metrics_app(app.broker))
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain; version=")
    found = samples(body.decode())
    assert value(found, "offload_jobs_enqueued_total", queue="prom", task="prom.ok") == 21


async def test_asgi_app_says_503_when_the_broker_is_down() -> None:
    async def down() -> Broker:
        raise BrokerUnavailable("redis://nowhere:6379: connection refused")

    status, _, body = await call(metrics_app(down))
    assert status == 503 and b"connection refused" in body


async def call(asgi: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    await asgi(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]
