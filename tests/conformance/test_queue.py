"""Enqueue and claim: ordering, priorities, delays, limits, opacity (DESIGN.md rules 1-3)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from offload.brokers.base import Broker, JobState
from tests.conformance.helpers import claim_all, put, req, state_of

if TYPE_CHECKING:
    from offload.clock import FakeClock


async def test_enqueued_job_is_claimed_with_its_payload_untouched(broker: Broker) -> None:
    garbage = bytes(range(256)) * 3  # not UTF-8, not an envelope: the broker must not care
    job_id = await put(broker, payload=garbage, name="some.task")
    [d] = await claim_all(broker)
    assert d.job_id == job_id
    assert d.payload == garbage
    assert d.name == "some.task"
    assert d.attempts == 1
    assert await state_of(broker, job_id) is JobState.RUNNING


async def test_fifo_within_one_priority(broker: Broker, clock: FakeClock) -> None:
    ids = []
    for _ in range(20):
        ids.append(await put(broker))
        clock.advance(0.001)
    got = [d.job_id for d in await claim_all(broker)]
    assert got == ids


async def test_fifo_holds_for_jobs_enqueued_in_the_same_instant(broker: Broker) -> None:
    outs = await broker.enqueue([req(broker) for _ in range(50)])
    ids = [o.job_id for o in outs]
    got = []
    for _ in range(10):
        got += [d.job_id for d in await claim_all(broker, limit=5)]
    assert got == ids


async def test_higher_priority_first_then_fifo(broker: Broker, clock: FakeClock) -> None:
    low1 = await put(broker, priority=0)
    high1 = await put(broker, priority=5)
    low2 = await put(broker, priority=0)
    high2 = await put(broker, priority=5)
    mid = await put(broker, priority=2)
    neg = await put(broker, priority=-3)
    got = [d.job_id for d in await claim_all(broker)]
    assert got == [high1, high2, mid, low1, low2, neg]


async def test_claim_respects_limit_and_queue_names(broker: Broker) -> None:
    for _ in range(5):
        await put(broker, queue="a")
    await put(broker, queue="b")
    first = await broker.claim(["a"], "w", 3, 30)
    assert len(first) == 3 and {d.queue for d in first} == {"a"}
    assert await broker.claim(["c"], "w", 10, 30) == []
    rest = await broker.claim(["a", "b"], "w", 10, 30)
    assert sorted(d.queue for d in rest) == ["a", "a", "b"]


async def test_claim_takes_turns_across_queues(broker: Broker) -> None:
    for _ in range(10):
        await put(broker, queue="a")
        await put(broker, queue="b")
    queues_seen = set()
    for _ in range(2):
        [d] = await broker.claim(["a", "b"], "w", 1, 30)
        queues_seen.add(d.queue)
    assert queues_seen == {"a", "b"}, "one busy queue must not starve the next"


async def test_delayed_job_is_not_claimed_early(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker, eta=clock.now() + 60)
    assert await state_of(broker, job_id) is JobState.SCHEDULED
    assert await claim_all(broker) == []
    clock.advance(59.9)
    assert await claim_all(broker) == []
    clock.advance(0.2)
    [d] = await claim_all(broker)
    assert d.job_id == job_id


async def test_due_delayed_job_queues_behind_jobs_due_earlier(
    broker: Broker, clock: FakeClock
) -> None:
    delayed = await put(broker, eta=clock.now() + 10)
    clock.advance(5)
    early = await put(broker)
    clock.advance(10)
    late = await put(broker)
    got = [d.job_id for d in await claim_all(broker)]
    assert got == [early, delayed, late]


async def test_claim_waits_for_a_job_and_returns_at_once(broker: Broker) -> None:
    async def produce() -> None:
        await asyncio.sleep(0.2)
        await put(broker)

    producer = asyncio.create_task(produce())
    loop = asyncio.get_running_loop()
    started = loop.time()
    got = await broker.claim(["q"], "w", 10, 30, wait_s=5.0)
    elapsed = loop.time() - started
    await producer
    assert len(got) == 1
    assert elapsed < 2.5, f"claim should return soon after the enqueue, took {elapsed:.2f}s"


async def test_claim_with_nothing_waits_at_most_wait_s(broker: Broker) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await broker.claim(["q"], "w", 10, 30, wait_s=0.3) == []
    assert loop.time() - started < 2.0


async def test_cancelled_claim_loses_no_job(broker: Broker, clock: FakeClock) -> None:
    job_id = await put(broker)
    for delay in (0.0, 0.001, 0.01):
        waiter = asyncio.create_task(broker.claim(["q"], "w", 10, 30, wait_s=10))
        await asyncio.sleep(delay)
        waiter.cancel()
        try:
            got = await waiter
        except asyncio.CancelledError:
            got = []
        if got:  # the claim won the race: settle it back so the next round can try again
            assert await broker.release(got[0])
    # Whatever the race did, the job is claimable now or after its lease.
    clock.advance(31)
    await broker.recover_expired()
    [d] = await claim_all(broker)
    assert d.job_id == job_id


async def test_concurrent_claims_never_hand_out_a_job_twice(broker: Broker) -> None:
    await broker.enqueue([req(broker) for _ in range(200)])
    batches = await asyncio.gather(*(broker.claim(["q"], f"w{i}", 7, 30) for i in range(40)))
    ids = [d.job_id for batch in batches for d in batch]
    assert len(ids) == len(set(ids)) == 200


async def test_batch_enqueue_reports_each_outcome(broker: Broker) -> None:
    first = req(broker, dedupe_key="k")
    [o] = await broker.enqueue([first])
    assert o.status == "queued"
    outs = await broker.enqueue([req(broker), req(broker, dedupe_key="k"), req(broker)])
    assert [o.status for o in outs] == ["queued", "duplicate", "queued"]
    assert outs[1].job_id == first.id
