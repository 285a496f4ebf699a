"""The load generator past the shop's capacity: 429s with Retry-After, a bounded queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from offload.demo.load import LoadPlan, drive_apart, parse_duration, parse_rate
from offload.demo.runner import running
from offload.demo.shop import Door
from offload.errors import QueueFull
from tests.demo.conftest import options

if TYPE_CHECKING:
    from pathlib import Path

    from offload.demo.load import Tick

BOUND = 30


async def test_past_capacity_the_async_path_sheds_load_and_the_sync_path_queues_it(
    tmp_path: Path,
) -> None:
    # 120 orders/s against a card processor that charges ~60/s: far past capacity.
    plan = LoadPlan(rate=120, duration_s=1.5, timeout_s=3.0, drain_s=30.0)
    async with running(options(tmp_path, max_depth=BOUND)) as demo:
        ticks: list[Tick] = []
        report = await drive_apart(demo.shop_url, plan, ticks.append)
        assert report is not None
        await demo.wait_idle(timeout_s=30)
    a, s = report.async_path, report.sync_path
    assert a.sent == s.sent == 180
    assert {t.path for t in ticks} == {"/orders", "/orders/sync"}
    assert a.ok + a.rejected + a.failed + a.timed_out == a.sent
    assert a.ok > 0 and a.rejected > 0, a
    assert a.failed == 0
    # Every 429 carried a Retry-After in whole seconds, from the queue's estimate.
    assert sum(a.retry_after_s.values()) == a.rejected
    assert all(int(v) >= 1 for v in a.retry_after_s)
    assert a.estimate_s is not None and a.estimate_s > 0
    # The queue stayed within its bound, and it was seen full.
    assert report.max_depth == BOUND
    assert report.depth_samples > 0
    assert report.depth_max <= BOUND
    assert report.drained_s is not None
    # Doing the work inside the request made those clients wait for it.
    assert s.rejected == 0 and s.ok > 0
    assert a.p50_s is not None and s.p50_s is not None
    assert a.p50_s < s.p50_s


def test_rates_and_durations_read_as_people_write_them() -> None:
    assert parse_rate("200/s") == parse_rate("200") == 200.0
    assert parse_rate("600/m") == 10.0
    assert parse_duration("30s") == parse_duration("30") == 30.0
    assert parse_duration("2m") == 120.0
    for bad in ("fast", "0/s", "-5", "10/h"):
        with pytest.raises(ValueError, match=r"e\.g\. 200/s"):
            parse_rate(bad)
    for bad in ("soon", "0s", "-1m"):
        with pytest.raises(ValueError, match=r"e\.g\. 30s"):
            parse_duration(bad)


def test_the_door_turns_orders_away_for_a_moment_after_the_queue_was_full() -> None:
    door = Door(hold_s=0.2)
    assert door.closed(10.0) is None
    full = QueueFull("orders", 30, 30, retry_after_s=0.5)
    door.shut(full, 10.0)
    assert door.closed(10.1) is full
    assert door.closed(10.2) is None
    door.shut(QueueFull("orders", 30, 30, retry_after_s=0.05), 20.0)
    assert door.closed(20.04) is not None
    assert door.closed(20.06) is None
