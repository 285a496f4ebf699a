"""OpenTelemetry trace propagation: one trace from the code that enqueues to the worker run.

::

    from offload.tracing import TracingMiddleware

    app = App(middleware=[TracingMiddleware()])

At enqueue (and publish) the middleware opens a short ``PRODUCER`` span as a child of the
caller's current span and writes its context into the envelope headers (``traceparent``,
``tracestate``: whatever the configured propagator writes, W3C Trace Context by default).
In the worker, the run of each attempt is a ``CONSUMER`` span whose parent is that context,
with the job id, task, queue and attempt as attributes and the outcome (``succeeded``,
``retrying``, ``dead``, ``cancelled``, ``released``) recorded when the attempt settles.
Spans the task itself opens nest under the run span, in async tasks and in threads.

It needs the ``otel`` extra (``pip install offload[otel]``, i.e. ``opentelemetry-api``)
and, to export anything, an SDK configured by the application. Without the extra every
hook is a no-op, so the middleware can be installed unconditionally.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from offload.middleware import CallNext, Middleware

if TYPE_CHECKING:
    from offload.context import JobContext
    from offload.message.envelope import Envelope

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the optional extra is not installed: every hook does nothing
    trace = None  # type: ignore[assignment]

__all__ = ["TracingMiddleware", "available"]

_SCOPE = "offload"
_FAILED = frozenset({"dead", "lost"})


def available() -> bool:
    """True when ``opentelemetry-api`` is installed (otherwise tracing is a no-op)."""
    return trace is not None


class TracingMiddleware(Middleware):
    """Carries the trace context through the envelope and spans each attempt.

    Args:
        tracer_provider: where spans go (default: the global provider the application
            configured with the OpenTelemetry SDK).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer: Any = None
        if trace is not None:
            self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._open: dict[int, Any] = {}  # id(JobContext) -> the run span awaiting its outcome
        self._lock = threading.Lock()

    def on_enqueue(self, envelope: Envelope) -> None:
        """Open the enqueue span and write its context into the headers."""
        self._send(envelope, "enqueue")

    def on_publish(self, envelope: Envelope) -> None:
        """Open the publish span and write its context into the headers."""
        self._send(envelope, "publish")

    def _send(self, env: Envelope, operation: str) -> None:
        if self._tracer is None:
            return
        attributes = {
            "messaging.system": "offload",
            "messaging.operation.type": "send",
            "messaging.operation.name": operation,
            "messaging.destination.name": env.queue,
            "messaging.message.id": env.id,
            "offload.job_id": env.id,
            "offload.task": env.name,
            "offload.queue": env.queue,
        }
        name = f"{operation} {env.name}"
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes
        ):
            propagate.inject(env.headers)

    async def around_execute(self, ctx: JobContext, call_next: CallNext) -> Any:
        """Run the attempt inside a span whose parent is the producer's context."""
        if self._tracer is None:
            return await call_next()
        parent = propagate.extract(dict(ctx.headers))
        span = self._tracer.start_span(
            f"run {ctx.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "offload",
                "messaging.operation.type": "process",
                "messaging.destination.name": ctx.queue,
                "messaging.message.id": ctx.id,
                "offload.job_id": ctx.id,
                "offload.task": ctx.name,
                "offload.queue": ctx.queue,
                "offload.attempt": ctx.attempt,
            },
        )
        with self._lock:
            self._open[id(ctx)] = span
        # end_on_exit=False: the span ends in on_outcome, once the outcome is known.
        with trace.use_span(span, end_on_exit=False, record_exception=True):
            return await call_next()

    def on_outcome(self, ctx: JobContext, outcome: str, duration_s: float) -> None:
        """Record the outcome on the run span and end it."""
        with self._lock:
            span = self._open.pop(id(ctx), None)
        if span is None:
            return
        span.set_attribute("offload.outcome", outcome)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, f"job {outcome}"))
        span.end()
