"""Builders shared by the conformance tests."""

from __future__ import annotations

import itertools
from typing import Any

from offload.brokers.base import Broker, Delivery, EnqueueRequest, ErrorRecord, JobState

_ids = itertools.count(1)


def req(broker: Broker, **fields: Any) -> EnqueueRequest:
    """An enqueue request with sensible defaults, stamped with the broker's clock."""
    n = next(_ids)
    fields.setdefault("id", f"job-{n:06d}")
    fields.setdefault("queue", "q")
    fields.setdefault("name", "task")
    fields.setdefault("payload", f"payload-{n}".encode())
    fields.setdefault("enqueued_at", broker.clock.now())  # type: ignore[attr-defined]
    return EnqueueRequest(**fields)


async def put(broker: Broker, **fields: Any) -> str:
    """Enqueue one job and return its id (asserting it was stored)."""
    r = req(broker, **fields)
    [out] = await broker.enqueue([r])
    assert out.status == "queued", out
    return out.job_id


async def claim_all(
    broker: Broker,
    queues: list[str] | None = None,
    limit: int = 1000,
    lease_s: float = 30.0,
    worker: str = "w1",
) -> list[Delivery]:
    return await broker.claim(queues or ["q"], worker, limit, lease_s)


async def state_of(broker: Broker, job_id: str) -> JobState | None:
    rec = await broker.get_job(job_id)
    return None if rec is None else rec.state


def err(reason: str = "exception", message: str = "boom", attempt: int = 1) -> ErrorRecord:
    return ErrorRecord(reason=reason, type="ValueError", message=message, attempt=attempt)
