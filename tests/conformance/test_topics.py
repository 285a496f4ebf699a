"""Topics: fan-out to groups, sharing inside a group, per-key order, replay, retention."""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.brokers.base import Broker, EventRequest, GroupSpec, JobState, TopicSpec, group_queue
from tests.conformance.helpers import err

if TYPE_CHECKING:
    from offload.clock import FakeClock


def ev(broker: Broker, n: int, key: str | None = None) -> EventRequest:
    return EventRequest(
        id=f"ev-{n}",
        payload=f"event-{n}".encode(),
        published_at=broker.clock.now(),
        key=key,  # type: ignore[attr-defined]
    )


async def setup_topic(broker: Broker, *groups: str, **spec: object) -> None:
    await broker.ensure_topic(
        TopicSpec(name="orders", **spec),  # type: ignore[arg-type]
        [GroupSpec(topic="orders", group=g, max_attempts=2) for g in groups],
    )


async def test_every_group_gets_every_event(broker: Broker) -> None:
    await setup_topic(broker, "email", "analytics", "audit")
    offsets = await broker.publish("orders", [ev(broker, i) for i in range(5)])
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    for g in ("email", "analytics", "audit"):
        got = await broker.claim([group_queue("orders", g)], "w", 100, 30)
        assert [d.payload for d in got] == [f"event-{i}".encode() for i in range(5)]
        assert {d.kind for d in got} == {"event"} and {d.name for d in got} == {"orders"}
        assert [d.job_id for d in got] == [f"ev-{i}:{g}" for i in range(5)]


async def test_work_is_shared_inside_a_group(broker: Broker) -> None:
    await setup_topic(broker, "email")
    await broker.publish("orders", [ev(broker, i) for i in range(10)])
    q = group_queue("orders", "email")
    a = await broker.claim([q], "w1", 4, 30)
    b = await broker.claim([q], "w2", 100, 30)
    assert len(a) == 4 and len(b) == 6
    assert not {d.job_id for d in a} & {d.job_id for d in b}


async def test_a_group_starts_with_events_after_its_creation(broker: Broker) -> None:
    await setup_topic(broker, "early")
    await broker.publish("orders", [ev(broker, 1)])
    await setup_topic(broker, "early", "late")
    await broker.publish("orders", [ev(broker, 2)])
    late = await broker.claim([group_queue("orders", "late")], "w", 10, 30)
    assert [d.payload for d in late] == [b"event-2"]


async def test_a_group_from_start_gets_the_retained_log(broker: Broker) -> None:
    await setup_topic(broker)
    await broker.publish("orders", [ev(broker, i) for i in range(3)])
    await broker.ensure_topic(
        TopicSpec(name="orders"), [GroupSpec(topic="orders", group="backfill", from_start=True)]
    )
    got = await broker.claim([group_queue("orders", "backfill")], "w", 10, 30)
    assert [d.payload for d in got] == [b"event-0", b"event-1", b"event-2"]


async def test_per_key_order_inside_each_group(broker: Broker) -> None:
    await setup_topic(broker, "g1", "g2")
    await broker.publish("orders", [ev(broker, i, key="cust-1") for i in range(3)])
    for g in ("g1", "g2"):
        q = group_queue("orders", g)
        for i in range(3):
            got = await broker.claim([q], "w", 10, 30)
            assert [d.payload for d in got] == [f"event-{i}".encode()], "one per key, in order"
            assert await broker.ack(got[0])


async def test_a_failing_group_does_not_hold_back_the_others(broker: Broker) -> None:
    await setup_topic(broker, "broken", "fine")
    await broker.publish("orders", [ev(broker, 1, key="k"), ev(broker, 2, key="k")])
    [bad] = await broker.claim([group_queue("orders", "broken")], "w", 10, 30)
    assert await broker.bury(bad, err())
    fine = group_queue("orders", "fine")
    for expected in (b"event-1", b"event-2"):
        [d] = await broker.claim([fine], "w", 10, 30)
        assert d.payload == expected
        await broker.ack(d)


async def test_replay_delivers_again_from_an_offset_or_a_time(
    broker: Broker, clock: FakeClock
) -> None:
    await setup_topic(broker, "g")
    offsets = []
    for i in range(4):
        offsets += await broker.publish("orders", [ev(broker, i)])
        clock.advance(10)
    q = group_queue("orders", "g")
    for d in await broker.claim([q], "w", 10, 30):
        await broker.ack(d)
    assert await broker.replay("orders", "g", from_offset=offsets[2]) == 2
    got = await broker.claim([q], "w", 10, 30)
    assert [d.payload for d in got] == [b"event-2", b"event-3"]
    for d in got:
        await broker.ack(d)
    assert await broker.replay("orders", "g", from_time=clock.now() - 35) == 3
    got = await broker.claim([q], "w", 10, 30)
    assert [d.payload for d in got] == [b"event-1", b"event-2", b"event-3"]
    assert await broker.replay("orders", "no-such-group", from_offset=0) == 0


async def test_retention_drops_only_expired_events(broker: Broker, clock: FakeClock) -> None:
    await setup_topic(broker, "g", retention_s=100)
    await broker.publish("orders", [ev(broker, 0)])
    clock.advance(60)
    await broker.publish("orders", [ev(broker, 1)])
    clock.advance(50)  # event 0 is 110 s old, event 1 is 50 s old
    await broker.prune()
    [info] = [t for t in await broker.topics() if t.name == "orders"]
    assert info.retained == 1
    assert await broker.replay("orders", "g", from_offset=0) == 1


async def test_retention_by_count(broker: Broker) -> None:
    await setup_topic(broker, max_events=3, retention_s=None)
    await broker.publish("orders", [ev(broker, i) for i in range(5)])
    await broker.prune()
    [info] = [t for t in await broker.topics() if t.name == "orders"]
    assert info.retained == 3
    assert info.last_offset is not None and info.first_offset == info.last_offset - 2


async def test_topics_lists_groups(broker: Broker) -> None:
    await setup_topic(broker, "a", "b")
    [info] = [t for t in await broker.topics() if t.name == "orders"]
    assert sorted(g.group for g in info.groups) == ["a", "b"]
    assert {g.queue for g in info.groups} == {"a@orders", "b@orders"}


async def test_event_deliveries_retry_and_die_like_jobs(broker: Broker) -> None:
    await setup_topic(broker, "g")
    await broker.publish("orders", [ev(broker, 0)])
    q = group_queue("orders", "g")
    [d] = await broker.claim([q], "w", 10, 30)
    assert d.max_attempts == 2
    assert await broker.retry(d, 0, err())
    [d] = await broker.claim([q], "w", 10, 30)
    assert d.attempts == 2
    assert await broker.bury(d, err())
    rec = await broker.get_job(d.job_id)
    assert rec is not None and rec.state is JobState.DEAD


async def test_group_keys_override_the_event_key_per_group(broker: Broker) -> None:
    await setup_topic(broker, "by_order", "by_customer")
    events = [
        EventRequest(
            id=f"e{i}",
            payload=f"event-{i}".encode(),
            published_at=broker.clock.now(),  # type: ignore[attr-defined]
            key=f"order-{i}",
            group_keys={"by_customer": "customer-1"},
        )
        for i in range(3)
    ]
    await broker.publish("orders", events)
    by_order = await broker.claim([group_queue("orders", "by_order")], "w", 10, 30)
    assert len(by_order) == 3, "distinct order keys run in parallel"
    by_customer = await broker.claim([group_queue("orders", "by_customer")], "w", 10, 30)
    assert [d.payload for d in by_customer] == [b"event-0"], "one customer: one at a time"
    assert [d.key for d in by_customer] == ["customer-1"]
