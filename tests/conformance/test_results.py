"""Results, their TTL, waiting for them, cancellation."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from offload.brokers.base import Broker, JobState, LeaseState, MarkCancelled
from tests.conformance.helpers import claim_all, err, put, state_of

if TYPE_CHECKING:
    from offload.clock import FakeClock


async def test_result_lives_for_its_ttl_then_is_pruned(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker, result_ttl_s=100)
    [d] = await claim_all(broker)
    assert await broker.ack(d, b"42")
    clock.advance(99)
    await broker.prune()
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.result == b"42"
    clock.advance(2)
    assert await broker.prune() >= 1
    assert await broker.get_job(job_id) is None


async def test_dead_jobs_are_kept_for_the_dead_ttl(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker, result_ttl_s=10, dead_ttl_s=1000)
    [d] = await claim_all(broker)
    assert await broker.bury(d, err())
    clock.advance(500)
    await broker.prune()
    assert await state_of(broker, job_id) is JobState.DEAD
    clock.advance(501)
    await broker.prune()
    assert await broker.get_job(job_id) is None


async def test_prune_leaves_unfinished_jobs_alone(broker: Broker, clock: FakeClock) -> None:
    queued = await put(broker, result_ttl_s=1)
    clock.advance(10_000)
    await broker.prune()
    assert await state_of(broker, queued) is JobState.QUEUED


async def test_wait_job_returns_when_the_job_finishes(broker: Broker) -> None:
    job_id = await put(broker)

    async def work() -> None:
        await asyncio.sleep(0.2)
        [d] = await claim_all(broker)
        await broker.ack(d, b"done")

    worker = asyncio.create_task(work())
    loop = asyncio.get_running_loop()
    started = loop.time()
    rec = await broker.wait_job(job_id, timeout_s=10)
    await worker
    assert rec is not None and rec.state is JobState.SUCCEEDED and rec.result == b"done"
    assert loop.time() - started < 5


async def test_wait_job_times_out_with_the_current_record(broker: Broker) -> None:
    job_id = await put(broker)
    rec = await broker.wait_job(job_id, timeout_s=0.2)
    assert rec is not None and rec.state is JobState.QUEUED
    assert await broker.wait_job("no-such-job", timeout_s=0.1) is None


async def test_get_jobs_is_batched(broker: Broker) -> None:
    a = await put(broker)
    b = await put(broker)
    recs = await broker.get_jobs([b, "missing", a])
    assert [r.id if r else None for r in recs] == [b, None, a]


async def test_cancel_a_pending_job(broker: Broker, clock: FakeClock) -> None:
    queued = await put(broker)
    delayed = await put(broker, eta=clock.now() + 60)
    assert await broker.cancel([queued, delayed, "missing"]) == [
        JobState.CANCELLED,
        JobState.CANCELLED,
        None,
    ]
    clock.advance(61)
    assert await claim_all(broker) == []


async def test_cancel_a_running_job_rides_on_the_heartbeat(broker: Broker) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker)
    assert await broker.cancel([job_id]) == [JobState.RUNNING]
    assert await broker.extend([d], 30) == [LeaseState.CANCEL_REQUESTED]
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.cancel_requested
    assert await broker.settle([MarkCancelled(d, err(reason="cancelled"))]) == [True]
    assert await state_of(broker, job_id) is JobState.CANCELLED


async def test_cancel_of_a_finished_job_changes_nothing(broker: Broker) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker)
    await broker.ack(d, b"x")
    assert await broker.cancel([job_id]) == [JobState.SUCCEEDED]
