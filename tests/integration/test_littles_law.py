"""Little's-Law analytics from real broker counters, on every backend, with a fake clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from offload.brokers.base import StateCounts, WorkerInfo
from offload.metrics.littles_law import Analytics, build_report, predict
from offload.metrics.report import StatsReport
from tests.conformance.helpers import claim_all, put

if TYPE_CHECKING:
    from offload.brokers.base import Broker
    from offload.clock import FakeClock


def worker(concurrency: int, queues: list[str]) -> WorkerInfo:
    return WorkerInfo(
        id=f"w{concurrency}", hostname="h", pid=1, queues=queues, concurrency=concurrency,
        started_at=0.0,
    )  # fmt: skip


async def test_window_measures_lambda_x_l_w_exactly(broker: Broker, clock: FakeClock) -> None:
    analytics = Analytics(min_span_s=0)
    await put(broker, name="a")  # so the queue exists before the window opens
    [d] = await claim_all(broker)
    await broker.ack(d)
    clock.advance(5)
    await analytics.sample(broker)  # the window opens at t = 0
    await put(broker, name="a")  # A: enqueued at 0
    clock.advance(1)
    [da] = await claim_all(broker)  # waits 1
    clock.advance(2)
    await broker.ack(da)  # service 2, system 3
    clock.advance(1)  # t = 4
    await put(broker, name="b")  # B: enqueued at 4, still running at the end
    [db] = await claim_all(broker)
    clock.advance(6)  # t = 10
    await broker.register_worker(worker(4, ["q"]), ttl_s=60)

    report = await analytics.report(broker, window_s=10)
    q = report.queue("q")
    assert q is not None and report.window_s == pytest.approx(10)
    assert q.arrival_rate == pytest.approx(2 / 10) and q.completion_rate == pytest.approx(1 / 10)
    assert q.jobs_in_system == pytest.approx((3 + 6) / 10), "L counts B while it runs"
    assert q.time_in_system_s == pytest.approx(3.0)
    assert q.mean_wait_s == pytest.approx(0.5) and q.mean_service_s == pytest.approx(2.0)
    assert (q.enqueued, q.finished, q.in_system, q.running) == (2, 1, 1, 1)
    assert q.slots == 4 and q.utilisation == pytest.approx((2 / 10) / 4)
    assert q.service.count == 1 and q.service.p50 == pytest.approx(2.0)
    assert q.wait.p99 == pytest.approx(1.0) and q.time_in_system.mean == pytest.approx(3.0)
    a, b = report.task("a"), report.task("b")
    assert a is not None and b is not None
    assert a.enqueued == 1 and a.jobs_in_system == pytest.approx(0.3)
    assert b.jobs_in_system == pytest.approx(0.6) and b.finished == 0 and b.slots == 4

    await broker.ack(db)  # B: system 6; now every job of the window has finished
    report = await analytics.report(broker, window_s=10)
    q = report.queue("q")
    assert q is not None and q.little_lw is not None and q.jobs_in_system is not None
    assert q.jobs_in_system == pytest.approx(q.little_lw), "L = λW when no job straddles"
    assert q.little_error == pytest.approx(0.0, abs=1e-9)


async def test_window_slides(broker: Broker, clock: FakeClock) -> None:
    analytics = Analytics(min_span_s=0, sample_every_s=1)
    await analytics.sample(broker)
    for _ in range(30):  # one arrival per second for 30 s, then a burst of 10
        await put(broker)
        clock.advance(1)
        await analytics.sample(broker)
    for _ in range(10):
        await put(broker)
    report = await analytics.report(broker, window_s=10)
    q = report.queue("q")
    assert q is not None and report.window_s == pytest.approx(10)
    assert q.arrival_rate == pytest.approx((10 + 10) / 10)
    whole = (await analytics.report(broker, window_s=600)).queue("q")
    assert whole is not None and whole.arrival_rate == pytest.approx(40 / 30)


async def test_a_first_report_without_time_passing_has_no_rates(broker: Broker) -> None:
    await put(broker)
    analytics = Analytics(min_span_s=0.05)  # waits 50 ms of real time; the fake clock stands
    report = await analytics.report(broker)
    q = report.queue("q")
    assert report.window_s == 0.0 and q is not None
    assert q.arrival_rate is None and q.jobs_in_system is None and q.pending == 1


async def test_queue_filter_and_json(broker: Broker, clock: FakeClock) -> None:
    await put(broker, queue="one")
    await put(broker, queue="two")
    analytics = Analytics(min_span_s=0)
    await analytics.sample(broker)
    clock.advance(2)
    report = await analytics.report(broker, queues=["two"])
    assert [q.name for q in report.queues] == ["two"]
    decoded = msgspec.json.decode(msgspec.json.encode(report), type=StatsReport)
    assert decoded == report


def test_predictions_with_a_backlog() -> None:
    counts = StateCounts(queued=10, running=4)
    p = predict(0.2, 1.0, "measured", 4, counts, target_wait_s=0.5)
    assert p.wait_now_s.value == pytest.approx((14 - 4 + 1) / 4)
    assert p.drain_s.value == pytest.approx(14 / (4 - 0.2))
    assert p.steady_wait_s.value is not None and p.steady_wait_s.value < 0.01
    assert p.slots_needed.value == 1.0
    assert "exponential" in p.wait_now_s.assumes and "λ=0.2/s" in p.drain_s.assumes
    overloaded = predict(5.0, 1.0, "measured", 4, counts, target_wait_s=0.5)
    assert overloaded.drain_s.value is None and "capacity" in overloaded.drain_s.unavailable
    assert (
        overloaded.steady_wait_s.value is None and "grows" in overloaded.steady_wait_s.unavailable
    )
    assert overloaded.slots_needed.value is not None and overloaded.slots_needed.value >= 6
    idle = predict(1.0, 1.0, "measured", 0, counts, target_wait_s=0.5)
    assert idle.wait_now_s.value is None and "no live worker" in idle.wait_now_s.unavailable
    unknown = predict(1.0, None, "", 4, counts, target_wait_s=0.5)
    assert unknown.drain_s.value is None and unknown.drain_s.unavailable


def test_report_without_history_has_no_rates() -> None:
    from offload.metrics.littles_law import Sample

    report = build_report(None, Sample(100.0, {}), {}, [])
    assert report.queues == [] and report.window_s == 0.0


async def test_app_stats_async_and_sync(app_url: str) -> None:
    import asyncio

    from offload import App

    app = App(app_url)

    @app.task(name="ll.nap", queue="ll")
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    try:
        await nap.enqueue_many([(0.01,)] * 30)
        worker = await app.worker(queues=("ll",), concurrency=3, poll_s=0.05)
        running = asyncio.create_task(worker.run())
        first = await app.stats(window=30)  # no history yet: measures for a second
        while (await (await app.broker()).stats(["ll"]))[0].counts.pending:
            await asyncio.sleep(0.05)
        report = await app.stats(["ll"], window=30, target_wait=0.5)
        worker.stop()
        await running
        assert first.window_s > 0.5
        q = report.queue("ll")
        assert q is not None and [x.name for x in report.queues] == ["ll"]
        assert q.slots == 3 and report.workers == 1
        assert q.service.count == 30 and q.service.p50 is not None and q.service.p50 >= 0.01
        assert q.predictions is not None and q.predictions.target_wait_s == 0.5
        synced = await asyncio.to_thread(app.stats_sync, ["ll"], window=30)
        assert synced.queue("ll") is not None and synced.window_s > report.window_s
    finally:
        await app.close()
