"""Leases, fencing, settlement and recovery (DESIGN.md rules 4-5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.brokers.base import (
    Ack,
    Broker,
    Bury,
    JobState,
    LeaseState,
    MarkCancelled,
    Release,
    RetryLater,
)
from tests.conformance.helpers import claim_all, err, put, req, state_of

if TYPE_CHECKING:
    from offload.clock import FakeClock


async def test_ack_stores_the_result_and_the_job_never_runs_again(
    broker: Broker, clock: FakeClock
) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker)
    assert await broker.ack(d, b"\x00result\xff")
    rec = await broker.get_job(job_id)
    assert rec is not None
    assert rec.state is JobState.SUCCEEDED
    assert rec.result == b"\x00result\xff"
    assert rec.finished_at == clock.now()
    clock.advance(3600)
    assert await broker.recover_expired() == 0
    assert await claim_all(broker) == []
    assert not await broker.ack(d, b"again"), "a second ack must be refused"
    assert (await broker.get_job(job_id)).result == b"\x00result\xff"  # type: ignore[union-attr]


async def test_settle_after_the_lease_expired_is_refused(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker, lease_s=10)
    clock.advance(10.5)
    assert not await broker.ack(d, b"late")
    assert not await broker.retry(d, 1.0, err())
    assert not await broker.bury(d, err())
    assert await broker.extend([d], 10) == [LeaseState.LOST]
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.result is None


async def test_slow_worker_cannot_overwrite_a_redelivery(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker, max_attempts=3)
    [slow] = await claim_all(broker, lease_s=10, worker="slow")
    clock.advance(11)
    assert await broker.recover_expired() == 1
    [fast] = await claim_all(broker, lease_s=10, worker="fast")
    assert fast.job_id == job_id
    assert fast.lease_token != slow.lease_token
    assert fast.attempts == 2
    assert not await broker.ack(slow, b"stale"), "the old lease holder must be fenced off"
    assert await broker.extend([slow], 10) == [LeaseState.LOST]
    assert await broker.ack(fast, b"fresh")
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.result == b"fresh"


async def test_extend_keeps_a_live_job_from_recovery(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker, lease_s=10)
    for _ in range(10):
        clock.advance(6)
        assert await broker.extend([d], 10) == [LeaseState.OK]
        assert await broker.recover_expired() == 0
    assert await state_of(broker, job_id) is JobState.RUNNING
    assert await broker.ack(d)


async def test_recover_expired_requeues_then_buries_after_max_recoveries(
    broker: Broker, clock: FakeClock
) -> None:
    job_id = await put(broker, max_recoveries=2)
    for expected_recoveries in (1, 2):
        [d] = await claim_all(broker, lease_s=5)
        clock.advance(6)
        assert await broker.recover_expired() == 1
        rec = await broker.get_job(job_id)
        assert rec is not None
        assert rec.state is JobState.QUEUED
        assert rec.recoveries == expected_recoveries
        assert rec.errors[-1].reason == "lease_expired"
    [d] = await claim_all(broker, lease_s=5)
    assert d.attempts == 3
    clock.advance(6)
    assert await broker.recover_expired() == 1
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.state is JobState.DEAD
    assert rec.errors[-1].reason == "lease_expired"


async def test_recover_expired_is_safe_to_run_concurrently(
    broker: Broker, clock: FakeClock
) -> None:
    import asyncio

    await broker.enqueue([req(broker) for _ in range(30)])
    await claim_all(broker, lease_s=5)
    clock.advance(6)
    counts = await asyncio.gather(*(broker.recover_expired() for _ in range(5)))
    assert sum(counts) == 30
    assert len(await claim_all(broker)) == 30


async def test_retry_waits_its_delay_and_records_the_error(
    broker: Broker, clock: FakeClock
) -> None:
    job_id = await put(broker, max_attempts=3)
    [d] = await claim_all(broker)
    assert await broker.retry(d, 30.0, err(message="first failure"))
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.state is JobState.RETRYING
    assert [e.message for e in rec.errors] == ["first failure"]
    clock.advance(29)
    assert await claim_all(broker) == []
    clock.advance(2)
    [d2] = await claim_all(broker)
    assert d2.job_id == job_id and d2.attempts == 2


async def test_bury_sends_the_job_to_the_dead_letters_with_its_reason(broker: Broker) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker)
    assert await broker.bury(d, err(reason="unknown_task", message="no task 'x'"))
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.state is JobState.DEAD
    assert rec.errors[-1].reason == "unknown_task"
    page = await broker.list_jobs(state=JobState.DEAD)
    assert [j.id for j in page.jobs] == [job_id]
    assert await broker.requeue([job_id]) == 1
    [again] = await claim_all(broker)
    assert again.job_id == job_id and again.attempts == 1


async def test_release_gives_the_attempt_back(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker)
    assert await broker.release(d)
    assert await state_of(broker, job_id) is JobState.QUEUED
    [d] = await claim_all(broker)
    assert d.attempts == 1
    assert await broker.settle([Release(d, delay_s=20)]) == [True]
    assert await state_of(broker, job_id) is JobState.SCHEDULED
    clock.advance(21)
    [d] = await claim_all(broker)
    assert d.attempts == 1


async def test_settle_is_batched_and_fenced_per_item(broker: Broker, clock: FakeClock) -> None:
    ids = [o.job_id for o in await broker.enqueue([req(broker, max_attempts=2) for _ in range(4)])]
    ds = await claim_all(broker)
    out = await broker.settle(
        [
            Ack(ds[0], b"r0"),
            RetryLater(ds[1], 5.0, err()),
            Bury(ds[2], err()),
            MarkCancelled(ds[3]),
            Ack(ds[0], b"twice"),  # same lease, already settled earlier in this batch
        ]
    )
    assert out == [True, True, True, True, False]
    states = [await state_of(broker, i) for i in ids]
    assert states == [JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD, JobState.CANCELLED]


async def test_follow_ups_are_enqueued_atomically_with_the_ack(broker: Broker) -> None:
    await put(broker)
    [d] = await claim_all(broker)
    nxt = req(broker, id="next-step", queue="q2")
    assert await broker.settle([Ack(d, b"1", follow_ups=[nxt])]) == [True]
    [n] = await broker.claim(["q2"], "w", 10, 30)
    assert n.job_id == "next-step"
    # A refused ack enqueues nothing.
    await put(broker)
    [d2] = await claim_all(broker)
    assert await broker.ack(d2)
    assert await broker.settle([Ack(d2, None, follow_ups=[req(broker, id="ghost")])]) == [False]
    assert await broker.get_job("ghost") is None


async def test_follow_ups_on_bury(broker: Broker) -> None:
    await put(broker)
    [d] = await claim_all(broker)
    cb = req(broker, id="on-failure", queue="q2")
    assert await broker.settle([Bury(d, err(), follow_ups=[cb])]) == [True]
    assert await state_of(broker, "on-failure") is JobState.QUEUED


async def test_progress_is_fenced_and_visible(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker)
    [d] = await claim_all(broker, lease_s=10)
    assert await broker.set_progress(d, 0.4, "page 4/10")
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.progress == 0.4 and rec.progress_message == "page 4/10"
    clock.advance(11)
    assert not await broker.set_progress(d, 0.9, "late")
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.progress == 0.4


async def test_a_recovered_job_keeps_its_place_in_the_queue(
    broker: Broker, clock: FakeClock
) -> None:
    """A job whose worker died goes back where it was, not behind the jobs that arrived
    while it ran: it has already waited its turn once."""
    first = await put(broker)
    clock.advance(1)
    [d] = await claim_all(broker, lease_s=5)
    clock.advance(1)
    later = [await put(broker) for _ in range(3)]
    clock.advance(5)
    assert await broker.recover_expired() == 1
    got = [x.job_id for x in await claim_all(broker)]
    assert got == [first, *later]
    assert d.job_id == first
