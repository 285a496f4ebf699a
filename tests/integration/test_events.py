"""Events on every backend: fan-out, typed events, per-key order, replay, lag, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from offload import App, ConfigurationError, JobState
from offload.brokers.base import group_queue
from offload.worker.worker import Worker
from tests.integration import event_apps as ev
from tests.integration.running import running_worker


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[App]:
    ev.app._override = None
    ev.app.use_broker(app_url)
    ev.records.clear()
    try:
        yield ev.app
    finally:
        await ev.app.close()


def running(app: App, **options: Any) -> AbstractAsyncContextManager[Worker]:
    return running_worker(app, **{"poll_s": 0.05, "lease_s": 10.0, **options})


async def until(predicate: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_every_group_gets_every_event_typed_as_its_handler_wants(app: App) -> None:
    events = [ev.OrderPlaced(order_id=i, customer_id=i % 3, total=9.5) for i in range(20)]
    await app.publish_many("order.placed", events)
    await app.publish("refund.issued", ev.Refund(order_id=1, amount=2.5))
    await app.publish("user.signup", {"user": "ada"})
    async with running(app, concurrency=10):
        await until(
            lambda: (
                len(ev.records["audit"]) == 20
                and len(ev.records["analytics"]) == 20
                and len(ev.records["send_receipt"]) == 20
                and ev.records["welcome"]
            )
        )
        await until(lambda: ev.records["refund"] == [2.5])
    assert sorted(ev.records["send_receipt"]) == list(range(20))
    assert sorted(ev.records["audit"]) == list(range(20))
    assert ev.records["welcome"] == ["ada"]


async def test_an_invalid_event_is_dead_lettered_only_where_it_is_invalid(app: App) -> None:
    [event_id] = [await app.publish("order.placed", {"order_id": "not a number"})]
    async with running(app):
        await until(lambda: ev.records["audit"] == ["not a number"])
        broker = await app.broker()
        rec = await broker.wait_job(f"{event_id}:send_receipt", 10)
    assert rec is not None and rec.state is JobState.DEAD
    assert rec.errors[-1].reason == "bad_event"
    assert "order_id" in rec.errors[-1].message


async def test_per_key_order_holds_at_concurrency_50(app: App) -> None:
    keys, per_key = 100, 100
    batch = [{"account": f"acct-{k}", "seq": s} for s in range(per_key) for k in range(keys)]
    for i in range(0, len(batch), 1000):
        await app.publish_many("ledger.entry", batch[i : i + 1000])
    async with running(app, concurrency=50, queues=(group_queue("ledger.entry", "ledger"),)):
        await until(lambda: len(ev.records["ledger"]) >= keys * per_key, timeout=180)
    seen: dict[str, list[int]] = {}
    for account, seq in ev.records["ledger"]:
        seen.setdefault(account, []).append(seq)
    assert len(seen) == keys
    for account, seqs in seen.items():
        assert seqs == list(range(per_key)), f"{account} out of order"


async def test_replay_delivers_again(app: App) -> None:
    await app.publish_many("user.signup", [{"user": u} for u in ("a", "b", "c")])
    async with running(app):
        await until(lambda: len(ev.records["welcome"]) == 3)
        assert await app.replay("user.signup", "welcome", from_offset=0) == 3
        await until(lambda: len(ev.records["welcome"]) == 6)
        assert await app.replay("user.signup", "welcome", from_time=0.0) == 3
        await until(lambda: len(ev.records["welcome"]) == 9)
    assert sorted(ev.records["welcome"]) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    with pytest.raises(ConfigurationError, match="has no group 'nope'"):
        await app.replay("user.signup", "nope", from_offset=0)


async def test_a_failing_group_does_not_slow_the_others(app: App) -> None:
    await app.publish_many("metrics.tick", [{"n": i} for i in range(30)])
    async with running(app, concurrency=8):
        await until(lambda: len(ev.records["healthy"]) == 30, timeout=20)
        lag = {g.group: g for g in await app.event_lag(["metrics.tick"])}
    assert lag["healthy"].behind == 0 and lag["healthy"].handled == 30
    assert lag["broken"].behind + lag["broken"].running + lag["broken"].dead == 30


async def test_lag_counts_what_each_group_has_not_handled(app: App) -> None:
    await app.publish_many("refund.issued", [ev.Refund(order_id=i, amount=1.0) for i in range(7)])
    [lag] = await app.event_lag(["refund.issued"])
    assert (lag.group, lag.behind, lag.handled) == ("refund", 7, 0)
    assert lag.oldest_age_s is not None and lag.oldest_age_s >= 0
    async with running(app):
        await until(lambda: len(ev.records["refund"]) == 7)
    [lag] = await app.event_lag(["refund.issued"])
    assert (lag.behind, lag.handled, lag.oldest_age_s) == (0, 7, None)


async def test_jobs_and_events_share_one_worker(app: App) -> None:
    job = await ev.plain_job.enqueue(5)
    await app.publish("user.signup", {"user": "grace"})
    async with running(app):
        assert await job.result(timeout=10) == 5
        await until(lambda: ev.records["welcome"] == ["grace"])


async def test_topic_retention_reaches_the_broker(app: App) -> None:
    app.topic("order.placed", retention=3600, max_events=500)
    try:
        await app.publish("order.placed", ev.OrderPlaced(order_id=1, customer_id=1))
        broker = await app.broker()
        [info] = [t for t in await broker.topics() if t.name == "order.placed"]
        assert (info.retention_s, info.max_events) == (3600, 500)
        assert {g.group for g in info.groups} == {"send_receipt", "analytics", "audit"}
    finally:
        del app.topics["order.placed"]


async def test_key_functions_see_the_event_typed_like_their_handler(app: App) -> None:
    # Published as plain dicts; the analytics group keys by OrderPlaced.customer_id.
    await app.publish_many("order.placed", [{"order_id": i, "customer_id": 7} for i in range(5)])
    broker = await app.broker()
    got = await broker.claim([group_queue("order.placed", "analytics")], "w", 10, 30)
    assert [d.key for d in got] == ["7"], "one customer: one delivery at a time"
