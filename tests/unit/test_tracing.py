"""Trace context travels from the enqueuing code to the worker's run span."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from offload import App, tracing
from offload.brokers.base import JobState
from offload.context import current_job
from offload.retry import RetryPolicy
from offload.tracing import TracingMiddleware


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_enqueue_and_run_spans_share_a_trace_parent_to_child(spans) -> None:
    provider, exporter = spans
    app = App("memory://tracing-ok", middleware=[TracingMiddleware(provider)])

    @app.task(name="shop.ship")
    async def ship(order: int) -> int:
        with provider.get_tracer("user").start_as_current_span("inside"):
            return order

    with provider.get_tracer("user").start_as_current_span("http request"):
        handle = await ship.enqueue(7)
    await app.run_worker(burst=True, poll_s=0.01)
    assert await handle.result(timeout=5) == 7

    got = by_name(exporter)
    request, enqueue, run, inside = (
        got["http request"],
        got["enqueue shop.ship"],
        got["run shop.ship"],
        got["inside"],
    )
    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in got.values()} == {trace_id}
    assert enqueue.parent.span_id == request.context.span_id
    assert run.parent.span_id == enqueue.context.span_id
    assert inside.parent.span_id == run.context.span_id
    assert enqueue.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert run.attributes["offload.job_id"] == handle.id
    assert run.attributes["offload.task"] == "shop.ship"
    assert run.attributes["offload.queue"] == "default"
    assert run.attributes["offload.attempt"] == 1
    assert run.attributes["offload.outcome"] == "succeeded"
    await app.close()


async def test_each_attempt_is_a_span_with_its_outcome(spans) -> None:
    provider, exporter = spans
    app = App("memory://tracing-fail", middleware=[TracingMiddleware(provider)])

    @app.task(name="flaky", retries=1, backoff=RetryPolicy(base=0.0))
    async def flaky() -> None:
        raise ValueError("<boom>")

    handle = await flaky.enqueue()
    await app.run_worker(burst=True, poll_s=0.01)
    assert (await handle.info()).state is JobState.DEAD
    runs = [s for s in exporter.get_finished_spans() if s.name == "run flaky"]
    assert [s.attributes["offload.attempt"] for s in runs] == [1, 2]
    assert [s.attributes["offload.outcome"] for s in runs] == ["retrying", "dead"]
    assert all(s.status.status_code is StatusCode.ERROR for s in runs)
    assert all(any(e.name == "exception" for e in s.events) for s in runs)
    [enqueue] = [s for s in exporter.get_finished_spans() if s.name == "enqueue flaky"]
    assert {s.parent.span_id for s in runs} == {enqueue.context.span_id}
    await app.close()


async def test_published_events_carry_the_context_to_subscribers(spans) -> None:
    provider, exporter = spans
    app = App("memory://tracing-events", middleware=[TracingMiddleware(provider)])
    seen: list[dict] = []

    @app.on("order.placed", group="mailer")
    async def mail(event: dict) -> None:
        seen.append(event)

    await app.open()
    with provider.get_tracer("user").start_as_current_span("checkout"):
        await app.publish("order.placed", {"id": 1})
    await app.run_worker(burst=True, poll_s=0.01)
    assert seen == [{"id": 1}]
    got = by_name(exporter)
    publish, run = got["publish order.placed"], got["run order.placed"]
    assert run.parent.span_id == publish.context.span_id
    assert run.context.trace_id == got["checkout"].context.trace_id
    await app.close()


async def test_without_the_extra_every_hook_is_a_no_op(monkeypatch) -> None:
    monkeypatch.setattr(tracing, "trace", None)
    app = App("memory://tracing-none", middleware=[TracingMiddleware()])

    @app.task(name="plain")
    async def plain() -> dict[str, str]:
        return dict(current_job().headers)

    handle = await plain.enqueue()
    await app.run_worker(burst=True, poll_s=0.01)
    assert await handle.result(timeout=5) == {}
    assert not tracing.available()
    await app.close()
