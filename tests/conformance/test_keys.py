"""Per-key ordering and concurrency, dedupe keys and bounded queues (DESIGN.md rule 2-3)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from offload.brokers.base import Broker, JobState
from tests.conformance.helpers import claim_all, err, put, req, state_of

if TYPE_CHECKING:
    from offload.clock import FakeClock


async def test_one_in_flight_per_key_in_enqueue_order(broker: Broker, clock: FakeClock) -> None:
    a = [await put(broker, key="A") for _ in range(3)]
    b = [await put(broker, key="B") for _ in range(2)]
    free = await put(broker)
    first = {d.job_id: d for d in await claim_all(broker)}
    assert set(first) == {a[0], b[0], free}, "one per key, keys in parallel"
    assert await state_of(broker, a[1]) is JobState.BLOCKED
    assert await claim_all(broker) == []
    assert await broker.ack(first[a[0]])
    [d] = await claim_all(broker)
    assert d.job_id == a[1]
    assert await broker.bury(d, err())  # bury frees the key too
    [d] = await claim_all(broker)
    assert d.job_id == a[2]


async def test_a_retrying_job_keeps_its_key(broker: Broker, clock: FakeClock) -> None:
    first = await put(broker, key="K", max_attempts=3)
    second = await put(broker, key="K")
    [d] = await claim_all(broker)
    assert await broker.retry(d, 10.0, err())
    clock.advance(5)
    assert await claim_all(broker) == [], "the next job of the key must wait for the retry"
    clock.advance(6)
    [d] = await claim_all(broker)
    assert d.job_id == first
    assert await broker.ack(d)
    [d] = await claim_all(broker)
    assert d.job_id == second


async def test_an_expired_lease_keeps_the_key_until_recovered_job_finishes(
    broker: Broker, clock: FakeClock
) -> None:
    first = await put(broker, key="K")
    second = await put(broker, key="K")
    [d] = await claim_all(broker, lease_s=5)
    clock.advance(6)
    await broker.recover_expired()
    [d] = await claim_all(broker)
    assert d.job_id == first
    assert await broker.ack(d)
    [d] = await claim_all(broker)
    assert d.job_id == second


async def test_key_limit_allows_n_at_once(broker: Broker) -> None:
    ids = [await put(broker, key="api", key_limit=2) for _ in range(5)]
    running = await claim_all(broker)
    assert [d.job_id for d in running] == ids[:2]
    assert await broker.ack(running[0])
    [d] = await claim_all(broker)
    assert d.job_id == ids[2]


async def test_cancelling_a_blocked_job_lets_the_rest_through(broker: Broker) -> None:
    a0 = await put(broker, key="K")
    a1 = await put(broker, key="K")
    a2 = await put(broker, key="K")
    [d] = await claim_all(broker)
    assert await broker.cancel([a1]) == [JobState.CANCELLED]
    assert await broker.ack(d)
    [d] = await claim_all(broker)
    assert d.job_id == a2
    assert d.job_id != a0


async def test_dedupe_key_holds_while_the_job_is_unfinished(broker: Broker) -> None:
    first = await put(broker, dedupe_key="report-7")
    [o] = await broker.enqueue([req(broker, dedupe_key="report-7")])
    assert (o.status, o.job_id) == ("duplicate", first)
    [d] = await claim_all(broker)
    [o] = await broker.enqueue([req(broker, dedupe_key="report-7")])
    assert o.status == "duplicate", "a running job still holds its dedupe key"
    assert await broker.ack(d)
    [o] = await broker.enqueue([req(broker, dedupe_key="report-7")])
    assert o.status == "queued" and o.job_id != first


async def test_job_id_is_unique_while_the_record_exists(broker: Broker) -> None:
    await put(broker, id="tick:nightly:2026-11-27T00:00")
    [d] = await claim_all(broker)
    assert await broker.ack(d)
    [o] = await broker.enqueue([req(broker, id="tick:nightly:2026-11-27T00:00")])
    assert (o.status, o.job_id) == ("duplicate", "tick:nightly:2026-11-27T00:00")


async def test_bounded_queue_reports_full_with_its_depth(broker: Broker) -> None:
    outs = await broker.enqueue([req(broker, max_depth=3) for _ in range(5)])
    assert [o.status for o in outs] == ["queued"] * 3 + ["full"] * 2
    assert outs[3].depth == 3
    await claim_all(broker, limit=1)  # running jobs do not count against the bound
    [o] = await broker.enqueue([req(broker, max_depth=3)])
    assert o.status == "queued"
    [o] = await broker.enqueue([req(broker, max_depth=3)])
    assert o.status == "full"
    [o] = await broker.enqueue([req(broker)])  # unbounded request into the same queue
    assert o.status == "queued"


async def test_bound_holds_under_concurrent_producers(broker: Broker) -> None:
    async def producer() -> list[str]:
        statuses = []
        for _ in range(20):
            [o] = await broker.enqueue([req(broker, max_depth=100)])
            statuses.append(o.status)
        return statuses

    results = await asyncio.gather(*(producer() for _ in range(20)))
    queued = sum(s == "queued" for r in results for s in r)
    assert queued == 100
    [stats] = await broker.stats(["q"])
    assert stats.counts.pending == 100


async def test_keys_and_dedupe_keys_are_scoped_to_their_queue(broker: Broker) -> None:
    await put(broker, queue="a", key="K", dedupe_key="D")
    await put(broker, queue="b", key="K", dedupe_key="D")
    got = await broker.claim(["a", "b"], "w", 10, 30)
    assert sorted(d.queue for d in got) == ["a", "b"]


async def test_bound_counts_earlier_jobs_of_the_same_batch(broker: Broker) -> None:
    outs = await broker.enqueue([req(broker), req(broker), req(broker, max_depth=2)])
    assert [o.status for o in outs] == ["queued", "queued", "full"]
    assert outs[2].depth == 2
