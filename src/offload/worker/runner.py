"""Running one delivery, in named steps: decode, resolve, bind, limit, execute, settle.

Each step either hands its result to the next or returns the settlement that ends the
delivery (a poison message is buried with its reason; nothing here raises past
:meth:`Runner.run` except the cancellation of a lost lease, which settles nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from offload.brokers.base import (
    Ack,
    Broker,
    Bury,
    Delivery,
    EnqueueRequest,
    ErrorRecord,
    MarkCancelled,
    Release,
    RetryLater,
    Settlement,
)
from offload.context import JobContext, reset_current, set_current
from offload.errors import Cancel, DecodeError, PayloadTooLarge, Retry, UnknownTask
from offload.flow.rate import RateGate
from offload.message.codecs import codec_for_payload
from offload.message.envelope import Envelope, decode_envelope
from offload.middleware import Middleware, run_around
from offload.retry import RetryPolicy
from offload.specs import BindError, Registry, SubscriberSpec, TaskSpec
from offload.worker.executors import (
    ProcessCrashed,
    ProcessPool,
    RemoteError,
    ThreadPool,
    run_in_context,
)

if TYPE_CHECKING:
    from offload.clock import Clock
    from offload.message.codecs import Codec

__all__ = ["Runner", "StopReason"]

log = logging.getLogger("offload.worker")

StopReason = Literal["lease_lost", "cancel_requested", "shutdown"]
MAX_TRACEBACK = 16_000
MAX_MESSAGE = 4_000

FollowUps = Callable[[Envelope, Any, Literal["success", "failure"]], list[EnqueueRequest]]


def run_key(d: Delivery) -> tuple[str, int]:
    """One run of a job: its id and the lease token of the claim that started it."""
    return (d.job_id, d.lease_token)


@dataclass(slots=True)
class _Target:
    """What a delivery runs: a task, or a subscriber's handler."""

    fn: Callable[..., Any]
    executor: str
    timeout_s: float | None
    retry: RetryPolicy
    retry_on: tuple[type[BaseException], ...]
    spec: TaskSpec | SubscriberSpec


class _Settled(Exception):
    """Internal: a step ended the delivery with this settlement (``None``: lease lost)."""

    def __init__(self, settlement: Settlement | None) -> None:
        self.settlement = settlement


class Runner:
    """Turns a delivery into a settlement by running its task."""

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        codec: Codec,
        clock: Clock,
        worker_id: str,
        threads: ThreadPool,
        processes: Callable[[], ProcessPool],
        progress: Callable[[str, float, str | None], None],
        follow_ups: FollowUps | None = None,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.codec = codec
        self.clock = clock
        self.worker_id = worker_id
        self.threads = threads
        self._processes = processes
        self._progress = progress
        self._follow_ups = follow_ups
        # By run_key: a job handed to this worker again while an expired run of it is
        # still stopping here is two runs, each with its own context and stop reason.
        self.stop_reasons: dict[tuple[str, int], StopReason] = {}
        self.contexts: dict[tuple[str, int], JobContext] = {}
        self.rate_gate = RateGate(broker.take_tokens)

    async def run(self, d: Delivery) -> Settlement | None:
        """Run one delivery; return its settlement, or ``None`` if its lease was lost."""
        try:
            env = self._decode(d)
            target = self._resolve(d, env)
            args, kwargs = self._bind(d, env, target)
            await self._check_rate(d, env, target)
            return await self._execute(d, env, target, args, kwargs)
        except _Settled as done:
            return done.settlement
        finally:
            self.stop_reasons.pop(run_key(d), None)
            self.contexts.pop(run_key(d), None)

    # ------------------------------------------------------------------ steps

    def _decode(self, d: Delivery) -> Envelope:
        limit = self.registry.max_payload
        if limit is not None and len(d.payload) > limit:  # written past the producer's check
            error = PayloadTooLarge(len(d.payload), limit, d.name)
            raise _Settled(self._bury(d, "payload_too_large", error))
        try:
            return decode_envelope(d.payload)
        except DecodeError as exc:
            raise _Settled(self._bury(d, "decode_error", exc)) from None

    def _resolve(self, d: Delivery, env: Envelope) -> _Target:
        if d.kind == "event":
            sub = self.registry.subscribers.get(d.queue)
            if sub is not None:
                return _Target(
                    sub.fn,
                    sub.executor,
                    env.timeout_s or sub.timeout_s,
                    sub.retry,
                    sub.retry_on,
                    sub,
                )
            known = list(self.registry.subscribers)
        else:
            spec = self.registry.tasks.get(env.name)
            if spec is not None:
                timeout = env.timeout_s if env.timeout_s is not None else spec.timeout_s
                return _Target(spec.fn, spec.executor, timeout, spec.retry, spec.retry_on, spec)
            known = list(self.registry.tasks)
        error = UnknownTask(env.name if d.kind == "job" else d.queue, known)
        raise _Settled(self._bury(d, "unknown_task", error))

    def _bind(
        self, d: Delivery, env: Envelope, target: _Target
    ) -> tuple[list[Any], dict[str, Any]]:
        spec = target.spec
        try:
            if isinstance(spec, SubscriberSpec):
                return [self._event_body(env, spec)], {}
            return spec.binder.bind(env.args, env.kwargs)
        except BindError as exc:
            reason = "bad_event" if isinstance(spec, SubscriberSpec) else "bad_arguments"
            raise _Settled(self._bury(d, reason, exc)) from None

    @staticmethod
    def _event_body(env: Envelope, spec: SubscriberSpec) -> Any:
        if len(env.args) != 1:
            raise BindError(f"an event carries exactly one body, got {len(env.args)} values")
        body = env.args[0]
        if spec.event_type is None:
            return body
        try:
            return msgspec.convert(body, spec.event_type, strict=False)
        except (msgspec.ValidationError, TypeError) as exc:
            raise BindError(f"event does not match {spec.event_type!r}: {exc}") from exc

    async def _check_rate(self, d: Delivery, env: Envelope, target: _Target) -> None:
        spec = target.spec
        if not isinstance(spec, TaskSpec) or spec.rate is None:
            return
        bucket = f"rate:{spec.name}"
        if spec.rate_per_key and env.key is not None:
            bucket += f":{env.key}"
        try:
            delay = await self.rate_gate.acquire(bucket, spec.rate.per_s, spec.rate.burst)
        except asyncio.CancelledError:
            raise _Settled(self._stopped(d)) from None
        if delay > 0:
            raise _Settled(Release(d, delay_s=delay))

    async def _execute(
        self, d: Delivery, env: Envelope, target: _Target, args: list[Any], kwargs: dict[str, Any]
    ) -> Settlement | None:
        ctx = JobContext(
            id=d.job_id,
            name=env.name,
            queue=d.queue,
            attempt=d.attempts - d.recoveries,
            max_attempts=d.max_attempts,
            enqueued_at=env.enqueued_at,
            headers=env.headers,
            key=env.key,
            _sink=self._progress,
        )
        self.contexts[run_key(d)] = ctx
        middleware = self.registry.middleware
        if middleware:
            return await self._execute_wrapped(d, env, target, args, kwargs, ctx, middleware)
        try:
            value = await self._call(target, args, kwargs, ctx)
        except asyncio.CancelledError:
            return self._stopped(d)
        except Exception as exc:
            return self._failed(d, env, target, exc)
        return self._succeeded(d, env, value)

    async def _execute_wrapped(
        self,
        d: Delivery,
        env: Envelope,
        target: _Target,
        args: list[Any],
        kwargs: dict[str, Any],
        ctx: JobContext,
        middleware: Sequence[Middleware],
    ) -> Settlement | None:
        """:meth:`_execute` inside the middleware chain, reporting each outcome to it."""
        started = time.perf_counter()
        settlement: Settlement | None
        try:
            value = await run_around(middleware, ctx, lambda: self._call(target, args, kwargs, ctx))
        except asyncio.CancelledError:
            settlement = self._stopped(d)
        except Exception as exc:
            settlement = self._failed(d, env, target, exc)
        else:
            settlement = self._succeeded(d, env, value)
        outcome = _OUTCOMES.get(type(settlement), "lost")
        duration = time.perf_counter() - started
        for mw in middleware:
            try:
                mw.on_outcome(ctx, outcome, duration)
            except Exception:
                log.exception(
                    "middleware %r failed in on_outcome",
                    mw,
                    extra=_delivery_extra("middleware_failed", d),
                )
        return settlement

    async def _call(
        self, target: _Target, args: list[Any], kwargs: dict[str, Any], ctx: JobContext
    ) -> Any:
        if target.executor == "async":
            token = set_current(ctx)
            try:
                if target.timeout_s is None:
                    return await target.fn(*args, **kwargs)
                async with asyncio.timeout(target.timeout_s):
                    return await target.fn(*args, **kwargs)
            finally:
                reset_current(token)
        if target.executor == "process":
            return await self._processes().run(target.fn, args, kwargs, ctx, target.timeout_s)
        fut = self.threads.submit(run_in_context(ctx, target.fn, args, kwargs))
        try:
            return await asyncio.wait_for(fut, target.timeout_s)
        except TimeoutError:
            log.warning(
                "sync task %r passed its time limit of %ss; its thread cannot be killed and "
                "keeps running in the background (use executor='process' for hard limits)",
                ctx.name,
                target.timeout_s,
                extra={
                    "action": "thread_timeout",
                    "job_id": ctx.id,
                    "task": ctx.name,
                    "attempt": ctx.attempt,
                },
            )
            raise

    # ------------------------------------------------------------------ outcomes

    def _succeeded(self, d: Delivery, env: Envelope, value: Any) -> Settlement:
        try:
            # The producer reads the result with its own codec: the one its job came in.
            result = None if value is None else codec_for_payload(d.payload).encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return self._bury(d, "result_not_serializable", exc, env)
        try:
            follow = self._follow_ups(env, value, "success") if self._follow_ups else []
        except Exception as exc:  # a next step that cannot be built (unknown task, too large)
            return self._bury(d, "bad_follow_up", exc, env)
        return Ack(d, result, follow)

    def _failed(self, d: Delivery, env: Envelope, target: _Target, exc: Exception) -> Settlement:
        if isinstance(exc, Cancel):
            return MarkCancelled(d, self._error(d, "cancelled", exc))
        reason = _reason(exc)
        failures = d.attempts - d.recoveries
        retryable = isinstance(exc, Retry) or isinstance(exc, target.retry_on)
        if retryable and failures < d.max_attempts:
            delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else None
            if delay is None:
                delay = target.retry.delay(failures)
            log.info(
                "job %s (%s) attempt %d failed with %s; retrying in %.1fs",
                d.job_id,
                env.name,
                failures,
                type(exc).__name__,
                delay,
                extra=_extra("job_retried", d, env),
            )
            return RetryLater(d, delay, self._error(d, reason, exc))
        log.warning(
            "job %s (%s) failed after %d attempt(s): %s: %s",
            d.job_id,
            env.name,
            failures,
            type(exc).__name__,
            exc,
            extra=_extra("job_dead", d, env),
        )
        return self._bury(d, reason, exc, env)

    def internal_error(self, d: Delivery, exc: BaseException) -> Settlement:
        """The settlement for a bug in offload itself: a failed attempt, retried with
        backoff and then dead-lettered, so it can never loop hot."""
        error = self._error(d, "internal_error", exc)
        failures = d.attempts - d.recoveries
        if failures < d.max_attempts:
            return RetryLater(d, RetryPolicy().delay(failures), error)
        return Bury(d, error)

    def _stopped(self, d: Delivery) -> Settlement | None:
        why = self.stop_reasons.get(run_key(d), "shutdown")
        if why == "lease_lost":
            return None  # another worker owns it now; any settlement would be refused
        if why == "cancel_requested":
            return MarkCancelled(
                d,
                ErrorRecord(
                    reason="cancelled",
                    message="cancel requested",
                    attempt=d.attempts,
                    at=self.clock.now(),
                    worker_id=self.worker_id,
                ),
            )
        return Release(d)

    def _bury(
        self, d: Delivery, reason: str, exc: BaseException, env: Envelope | None = None
    ) -> Bury:
        if env is None:
            log.warning(
                "job %s dead-lettered (%s): %s",
                d.job_id,
                reason,
                exc,
                extra={**_delivery_extra("job_dead", d), "reason": reason},
            )
        return Bury(d, self._error(d, reason, exc), self._on_failure(d, env))

    def _on_failure(self, d: Delivery, env: Envelope | None) -> list[EnqueueRequest]:
        """The on-failure follow-ups of a dead job; none if they cannot be built (the job
        is dead either way, and the log says why its callbacks did not run)."""
        if env is None or self._follow_ups is None:
            return []
        try:
            return self._follow_ups(env, d.job_id, "failure")
        except Exception:
            log.exception(
                "job %s: its on-failure callbacks cannot be enqueued",
                d.job_id,
                extra=_delivery_extra("bad_follow_up", d),
            )
            return []

    def _error(self, d: Delivery, reason: str, exc: BaseException) -> ErrorRecord:
        if isinstance(exc, RemoteError):
            type_name, message, tb = exc.type_name, exc.message, exc.remote_traceback
        else:
            type_name = type(exc).__qualname__
            message = str(exc)
            tb = "".join(traceback.format_exception(exc))
        return ErrorRecord(
            reason=reason,
            type=type_name,
            message=message[:MAX_MESSAGE],
            traceback=tb[-MAX_TRACEBACK:],
            attempt=d.attempts,
            at=self.clock.now(),
            worker_id=self.worker_id,
        )


_OUTCOMES: dict[type[Any], str] = {
    Ack: "succeeded",
    RetryLater: "retrying",
    Bury: "dead",
    MarkCancelled: "cancelled",
    Release: "released",
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ProcessCrashed):
        return "process_crashed"
    if isinstance(exc, Retry):
        return "retry_requested"
    return "exception"


def _extra(action: str, d: Delivery, env: Envelope) -> dict[str, Any]:
    return {"action": action, "job_id": d.job_id, "task": env.name, "attempt": d.attempts}


def _delivery_extra(action: str, d: Delivery) -> dict[str, Any]:
    """The ``extra`` of a log line about a delivery: what every job log line carries."""
    return {"action": action, "job_id": d.job_id, "task": d.name, "attempt": d.attempts}
