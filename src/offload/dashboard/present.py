"""Job records as views: payloads decoded and truncated, never trusted.

A payload may be anything a producer wrote (including a poison message): it is decoded
with offload's own envelope decoder, re-encoded as JSON text and cut at a character
limit, so the templates only ever print strings, which Jinja escapes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from offload.brokers.base import JobRecord, JobState
from offload.dashboard.models import ErrorView, JobDetail, JobSummary, TimelineStep
from offload.errors import DecodeError
from offload.message.codecs import codec_for_payload
from offload.message.envelope import Envelope, decode_envelope

__all__ = ["PREVIEW_CHARS", "TEXT_CHARS", "detail", "summary", "truncate"]

PREVIEW_CHARS = 120
TEXT_CHARS = 4_000
TRACEBACK_CHARS = 16_000

_encoder = msgspec.json.Encoder(enc_hook=repr)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a note of how much was cut."""
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}… ({len(text) - limit} more characters)", True


def as_json(value: Any, limit: int, *, indent: int = 0) -> tuple[str, bool]:
    """A value as JSON text, truncated."""
    data = _encoder.encode(value)
    if indent and len(data) <= 64 * 1024:
        data = msgspec.json.format(data, indent=indent)
    return truncate(data.decode(errors="replace"), limit)


def _decode(rec: JobRecord) -> tuple[Envelope | None, str | None]:
    try:
        return decode_envelope(rec.payload), None
    except DecodeError as exc:
        return None, truncate(str(exc), 300)[0]


def _preview(env: Envelope | None, rec: JobRecord) -> str:
    if env is None:
        return f"(undecodable payload, {len(rec.payload)} bytes)"
    if env.kwargs:
        return as_json([env.args, env.kwargs], PREVIEW_CHARS)[0]
    return as_json(env.args, PREVIEW_CHARS)[0]


def summary(rec: JobRecord, env: Envelope | None = None, decoded: bool = False) -> JobSummary:
    """The listing row of a job."""
    if not decoded:
        env, _ = _decode(rec)
    last = rec.errors[-1] if rec.errors else None
    return JobSummary(
        id=rec.id,
        name=rec.name,
        queue=rec.queue,
        kind=rec.kind,
        state=rec.state.value,
        priority=rec.priority,
        attempts=rec.attempts,
        max_attempts=rec.max_attempts,
        enqueued_at=rec.enqueued_at,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
        args_preview=_preview(env, rec),
        last_error=None if last is None else truncate(_error_line(last), 200)[0],
    )


def _error_line(e: Any) -> str:
    return f"{e.type}: {e.message}" if e.type else e.reason


def _result(rec: JobRecord) -> tuple[str | None, bool]:
    if rec.result is None:
        return None, False
    try:
        # a result is written with the codec its job came in
        value = codec_for_payload(rec.payload).decode(rec.result)
    except (msgspec.DecodeError, ValueError):
        return truncate(repr(rec.result[: TEXT_CHARS + 1]), TEXT_CHARS)
    return as_json(value, TEXT_CHARS, indent=2)


def _timeline(rec: JobRecord) -> list[TimelineStep]:
    steps = [("enqueued", rec.enqueued_at)]
    if rec.run_at and rec.run_at > rec.enqueued_at:
        steps.append(("due", rec.run_at))
    if rec.started_at is not None:
        steps.append(("started", rec.started_at))
    if rec.finished_at is not None:
        steps.append((rec.state.value, rec.finished_at))
    out: list[TimelineStep] = []
    for i, (label, at) in enumerate(steps):
        after = None if i == 0 else max(0.0, at - steps[i - 1][1])
        out.append(TimelineStep(label=label, at=at, after_s=after))
    return out


def detail(rec: JobRecord) -> JobDetail:
    """Everything about one job, safe to render."""
    env, problem = _decode(rec)
    args, cut_args = as_json(env.args if env else [], TEXT_CHARS, indent=2)
    kwargs, cut_kwargs = as_json(env.kwargs if env else {}, TEXT_CHARS, indent=2)
    result, cut_result = _result(rec)
    raw_headers = list((env.headers if env else {}).items())[:50]
    headers = {truncate(k, 100)[0]: truncate(v, 500)[0] for k, v in raw_headers}
    final = rec.state.is_final
    return JobDetail(
        job=summary(rec, env, decoded=True),
        key=rec.key,
        dedupe_key=rec.dedupe_key,
        recoveries=rec.recoveries,
        run_at=rec.run_at,
        args=args,
        kwargs=kwargs,
        headers=headers,
        result=result,
        truncated=cut_args or cut_kwargs or cut_result,
        decode_error=problem,
        errors=[_error_view(e) for e in rec.errors[-50:]],
        timeline=_timeline(rec),
        progress=rec.progress,
        progress_message=rec.progress_message and truncate(rec.progress_message, 500)[0],
        cancel_requested=rec.cancel_requested,
        worker_id=rec.worker_id,
        lease_expires=rec.lease_expires,
        can_requeue=rec.state in (JobState.DEAD, JobState.CANCELLED),
        can_delete=rec.state is not JobState.RUNNING,
        can_cancel=not final,
    )


def _error_view(e: Any) -> ErrorView:
    return ErrorView(
        attempt=e.attempt,
        reason=e.reason,
        type=truncate(e.type, 200)[0],
        message=truncate(e.message, TEXT_CHARS)[0],
        traceback=truncate(e.traceback, TRACEBACK_CHARS)[0],
        at=e.at,
        worker_id=e.worker_id,
    )
