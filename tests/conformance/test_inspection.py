"""Counts, Little's-Law counters, listings and repairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from offload.brokers.base import STATS_EPOCH, Broker, JobState
from tests.conformance.helpers import claim_all, err, put, req

if TYPE_CHECKING:
    from offload.clock import FakeClock


async def test_state_counts(broker: Broker, clock: FakeClock) -> None:
    await put(broker, eta=clock.now() + 100)
    for _ in range(4):
        await put(broker, max_attempts=2)
    await put(broker, key="K")
    await put(broker, key="K")
    ds = await claim_all(broker, limit=4)
    await broker.ack(ds[0])
    await broker.bury(ds[1], err())
    await broker.retry(ds[2], 50, err())
    [stats] = await broker.stats(["q"])
    c = stats.counts
    assert (c.scheduled, c.queued, c.blocked, c.running, c.retrying) == (1, 1, 1, 1, 1)
    assert (c.succeeded, c.dead, c.cancelled) == (1, 1, 0)
    assert c.pending == 4


async def test_counters_measure_arrivals_waits_service_and_time_in_system(
    broker: Broker, clock: FakeClock
) -> None:
    t0 = clock.now()
    await put(broker, name="a")  # enqueued at t0
    clock.advance(2)
    await put(broker, name="b", max_attempts=2)  # enqueued at t0+2
    clock.advance(3)  # t0+5
    [da, db] = await claim_all(broker)  # waits: 5 and 3
    clock.advance(1)  # t0+6
    await broker.ack(da)  # service 1, system 6
    await broker.retry(db, 0, err())  # service 1, retried
    clock.advance(1)  # t0+7
    [db] = await claim_all(broker)
    clock.advance(2)  # t0+9
    await broker.bury(db, err())  # service 2, system 7

    [stats] = await broker.stats(["q"])
    c = stats.counters
    assert (c.enqueued, c.started, c.waited) == (2, 3, 2)
    assert (c.succeeded, c.dead, c.cancelled, c.retried) == (1, 1, 0, 1)
    assert c.wait_s == pytest.approx(8.0)
    assert c.service_s == pytest.approx(4.0)
    assert c.system_s == pytest.approx(13.0)
    assert c.in_system == 0
    assert c.area(clock.now()) == pytest.approx(13.0)
    assert set(stats.by_task) == {"a", "b"}
    assert stats.by_task["a"].succeeded == 1 and stats.by_task["b"].dead == 1
    del t0


async def test_area_counts_jobs_still_in_the_system(broker: Broker, clock: FakeClock) -> None:
    await put(broker)
    clock.advance(4)
    await put(broker)
    clock.advance(1)
    [stats] = await broker.stats(["q"])
    assert stats.counters.in_system == 2
    assert stats.counters.in_system_enq_s == pytest.approx(2 * (clock.now() - STATS_EPOCH) - 6)
    assert stats.counters.area(clock.now()) == pytest.approx(5 + 1)
    assert stats.oldest_pending_at == pytest.approx(clock.now() - 5)


async def test_queues_and_stats_for_all(broker: Broker) -> None:
    await put(broker, queue="alpha")
    await put(broker, queue="beta")
    assert {"alpha", "beta"} <= set(await broker.queues())
    names = {s.queue for s in await broker.stats()}
    assert {"alpha", "beta"} <= names
    [empty] = await broker.stats(["never-used"])
    assert empty.counts.pending == 0 and empty.counters.enqueued == 0


async def test_list_jobs_filters_and_pages_newest_first(broker: Broker, clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        ids.append(await put(broker, name="even" if i % 2 == 0 else "odd"))
        clock.advance(0.01)
    page = await broker.list_jobs(queue="q", limit=3)
    assert [j.id for j in page.jobs] == ids[::-1][:3]
    assert page.next_cursor is not None
    page2 = await broker.list_jobs(queue="q", limit=3, cursor=page.next_cursor)
    assert [j.id for j in page2.jobs] == ids[::-1][3:6]
    page3 = await broker.list_jobs(queue="q", limit=3, cursor=page2.next_cursor)
    assert [j.id for j in page3.jobs] == ids[:1] and page3.next_cursor is None
    odd = await broker.list_jobs(name="odd")
    assert [j.id for j in odd.jobs] == [ids[5], ids[3], ids[1]]
    assert (await broker.list_jobs(state=JobState.RUNNING)).jobs == []


async def test_timings_of_finished_jobs(broker: Broker, clock: FakeClock) -> None:
    start = clock.now()
    await put(broker, name="t")
    clock.advance(1)
    [d] = await claim_all(broker)
    clock.advance(2)
    await broker.ack(d)
    [t] = await broker.timings("q", since=start)
    assert t.name == "t" and t.state is JobState.SUCCEEDED
    assert (t.started_at - t.enqueued_at, t.finished_at - t.started_at) == pytest.approx((1, 2))
    assert await broker.timings("q", since=clock.now() + 1) == []


async def test_delete_and_purge(broker: Broker) -> None:
    keep = await put(broker, queue="other")
    ids = [o.job_id for o in await broker.enqueue([req(broker) for _ in range(5)])]
    [running] = await claim_all(broker, limit=1)
    assert await broker.delete([ids[1], running.job_id]) == 1, "a running job is not deleted"
    assert await broker.purge("q") == 3
    [stats] = await broker.stats(["q"])
    assert stats.counts.pending == 0 and stats.counts.running == 1
    assert await broker.get_job(keep) is not None


async def test_requeue_dead_jobs(broker: Broker) -> None:
    ids = [o.job_id for o in await broker.enqueue([req(broker) for _ in range(3)])]
    for d in await claim_all(broker):
        await broker.bury(d, err())
    assert await broker.requeue([*ids, "missing"]) == 3
    [stats] = await broker.stats(["q"])
    assert stats.counts.queued == 3 and stats.counts.dead == 0
    rec = await broker.get_job(ids[0])
    assert rec is not None and rec.attempts == 0 and rec.errors, "history is kept"
