"""Named leases, token buckets, key-value, the worker registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from offload.brokers.base import Broker, WorkerInfo

if TYPE_CHECKING:
    from offload.clock import FakeClock


async def test_named_lease_is_exclusive_renewable_and_expires(
    broker: Broker, clock: FakeClock
) -> None:
    assert await broker.acquire_lease("scheduler", "a", 10)
    assert not await broker.acquire_lease("scheduler", "b", 10)
    clock.advance(8)
    assert await broker.acquire_lease("scheduler", "a", 10), "the owner renews"
    clock.advance(8)
    assert not await broker.acquire_lease("scheduler", "b", 10), "renewal moved the expiry"
    clock.advance(3)
    assert await broker.acquire_lease("scheduler", "b", 10), "taken over after expiry"
    assert not await broker.release_lease("scheduler", "a")
    assert await broker.release_lease("scheduler", "b")
    assert await broker.acquire_lease("scheduler", "c", 10)


async def test_token_bucket_rate_and_burst(broker: Broker, clock: FakeClock) -> None:
    granted = 0
    for _ in range(10):
        if await broker.take_tokens("api", rate=2.0, burst=5.0) == 0.0:
            granted += 1
    assert granted == 5, "a new bucket starts full (burst)"
    wait = await broker.take_tokens("api", rate=2.0, burst=5.0)
    assert wait == pytest.approx(0.5, abs=0.01)
    clock.advance(0.5)
    assert await broker.take_tokens("api", rate=2.0, burst=5.0) == 0.0
    clock.advance(100)
    granted = sum([await broker.take_tokens("api", 2.0, 5.0) == 0.0 for _ in range(10)])
    assert granted == 5, "tokens never exceed the burst"


async def test_token_bucket_refills_each_interval_once_when_calls_arrive_out_of_order(
    broker: Broker, clock: FakeClock
) -> None:
    # Callers stamp calls with their own clock; a call can reach the bucket after a later-
    # stamped one. It must not move the refill mark back (that would grant extra tokens).
    for _ in range(5):
        assert await broker.take_tokens("api", 2.0, 5.0) == 0.0
    clock.advance(1.0)
    assert [await broker.take_tokens("api", 2.0, 5.0) == 0.0 for _ in range(3)] == [
        True,
        True,
        False,
    ]
    clock._now -= 0.5  # a late call, stamped half a second earlier
    assert await broker.take_tokens("api", 2.0, 5.0) > 0
    clock.advance(0.5)  # back at the last refill: nothing new has accrued
    assert await broker.take_tokens("api", 2.0, 5.0) > 0
    clock.advance(0.5)
    assert await broker.take_tokens("api", 2.0, 5.0) == 0.0


async def test_kv_with_ttl(broker: Broker, clock: FakeClock) -> None:
    assert await broker.kv_get("k") is None
    await broker.kv_set("k", b"v1")
    await broker.kv_set("t", b"temp", ttl_s=10)
    assert await broker.kv_get("k") == b"v1"
    assert await broker.kv_get("t") == b"temp"
    clock.advance(11)
    assert await broker.kv_get("t") is None
    await broker.kv_set("k", b"v2")
    assert await broker.kv_get("k") == b"v2"


async def test_worker_registry_forgets_silent_workers(broker: Broker, clock: FakeClock) -> None:
    info = WorkerInfo(
        id="w1", hostname="h", pid=1, queues=["q"], concurrency=4, started_at=clock.now()
    )
    await broker.register_worker(info, ttl_s=10)
    await broker.register_worker(
        WorkerInfo(
            id="w2", hostname="h", pid=2, queues=["q"], concurrency=4, started_at=clock.now()
        ),
        ttl_s=30,
    )
    assert {w.id for w in await broker.workers()} == {"w1", "w2"}
    clock.advance(11)
    assert {w.id for w in await broker.workers()} == {"w2"}
    [w2] = await broker.workers()
    assert w2.last_seen == pytest.approx(clock.now() - 11)
    await broker.unregister_worker("w2")
    assert await broker.workers() == []
