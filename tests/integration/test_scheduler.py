"""The scheduler on every backend, stepped with a fake clock: leadership, takeover,
split brain, misfire policies, state in the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from offload import App, JobState
from offload.brokers import Broker
from offload.clock import FakeClock
from offload.schedules import tick_id
from offload.worker.scheduler import Scheduler

LEASE = 3.0


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[App]:
    app = App(app_url, clock=FakeClock())
    app.scheduler_lease = LEASE

    @app.every(seconds=5, name="s.five", grace=30)
    async def five() -> None: ...

    try:
        yield app
    finally:
        await app.close()


def clock_of(app: App) -> FakeClock:
    assert isinstance(app.clock, FakeClock)
    return app.clock


async def tick_jobs(broker: Broker, name: str) -> dict[str, int]:
    """How many job records each tick id has (always 1: ids are unique)."""
    page = await broker.list_jobs(name=name, limit=1000)
    counts: dict[str, int] = {}
    for rec in page.jobs:
        counts[rec.id] = counts.get(rec.id, 0) + 1
    return counts


def expected_ticks(schedule: str, start: float, end: float, every: float = 5.0) -> set[str]:
    first = (start // every + 1) * every
    return {tick_id(schedule, first + i * every) for i in range(int((end - first) // every) + 1)}


async def test_one_leader_fires_every_tick_once(app: App) -> None:
    broker, clock = await app.broker(), clock_of(app)
    a, b = app.scheduler(broker), app.scheduler(broker)
    start = clock.now()
    fired: list[str] = []
    for _ in range(40):
        ra, rb = await a.step(), await b.step()
        assert ra.leader and not rb.leader and not rb.fired
        fired += ra.fired
        clock.advance(1.0)
    assert len(fired) == len(set(fired)) == 7
    assert set(fired) == expected_ticks("s.five", start, start + 39)
    jobs = await tick_jobs(broker, "s.five")
    assert set(jobs) == set(fired)
    rec = await broker.get_job(fired[0])
    assert rec is not None and rec.state is JobState.QUEUED


async def test_a_standby_takes_over_within_the_lease_and_fires_the_gap(app: App) -> None:
    broker, clock = await app.broker(), clock_of(app)
    a, b = app.scheduler(broker), app.scheduler(broker)
    start = clock.now()
    for _ in range(12):
        await a.step()
        await b.step()
        clock.advance(1.0)
    died = clock.now()  # a stops stepping: it crashed
    took_over = None
    for _ in range(30):
        rb = await b.step()
        if rb.leader and took_over is None:
            took_over = clock.now()
        clock.advance(0.5)
    assert took_over is not None and took_over - died <= LEASE + LEASE / 5 + 0.5
    jobs = await tick_jobs(broker, "s.five")
    assert set(jobs) == expected_ticks("s.five", start, clock.now() - 0.5), "no tick lost"


async def test_split_brain_cannot_fire_a_tick_twice(app: App) -> None:
    broker, clock = await app.broker(), clock_of(app)
    a, b = app.scheduler(broker), app.scheduler(broker)
    b.lease = "offload:scheduler:another-view-of-the-world"  # both believe they lead
    start = clock.now()
    outcomes: list[str] = []
    for _ in range(20):
        ra, rb = await a.step(), await b.step()
        assert ra.leader and rb.leader
        outcomes += ra.fired + rb.fired
        clock.advance(1.0)
    jobs = await tick_jobs(broker, "s.five")
    assert set(jobs) == expected_ticks("s.five", start, start + 19)
    assert all(n == 1 for n in jobs.values())
    assert len(outcomes) == 2 * len(jobs), "each tick was enqueued twice; the broker kept one"


async def test_skip_and_catch_up_after_every_scheduler_was_down(app: App) -> None:
    broker, clock = await app.broker(), clock_of(app)

    @app.every(seconds=10, name="s.skip", grace=5)
    async def skipper() -> None: ...

    @app.every(seconds=10, name="s.catch", grace=5, misfire="catch_up", max_catch_up=3)
    async def catcher() -> None: ...

    start = clock.now()
    assert start % 10 == 0
    await app.scheduler(broker).step()  # anchors every schedule's state at this instant
    clock.advance(100.0)  # then nobody runs for 100 s: ticks +10 .. +90 are missed
    await app.scheduler(broker).step()
    skip_jobs = set(await tick_jobs(broker, "s.skip"))
    catch_jobs = set(await tick_jobs(broker, "s.catch"))
    assert skip_jobs == {tick_id("s.skip", start + 100)}, "missed ticks skipped, on-time fired"
    assert catch_jobs == {tick_id("s.catch", start + d) for d in (70, 80, 90, 100)}
    skipped = {i.name: i.skipped for i in await app.schedule_infos()}
    assert skipped["s.skip"] == 9 and skipped["s.catch"] == 6


async def test_a_new_schedule_starts_with_its_next_tick(app: App) -> None:
    broker, clock = await app.broker(), clock_of(app)
    clock.advance(4.0)  # just after a multiple of 5 s: that tick is in the past
    now = clock.now()
    result = await app.scheduler(broker).step()
    assert result.fired == []
    assert result.wake_at == (now // 5 + 1) * 5


async def test_schedule_infos_show_last_and_next_tick(app: App) -> None:
    broker, clock = await app.broker(), clock_of(app)
    sched = app.scheduler(broker)
    [before] = await app.schedule_infos()
    assert before.last_tick is None and before.trigger == "every 5s"
    for _ in range(7):
        await sched.step()
        clock.advance(1.0)
    [info] = await app.schedule_infos()
    last = (clock.now() - 1) // 5 * 5
    assert info.name == "s.five" and info.task == "s.five" and info.queue == "default"
    assert info.last_tick == last and info.last_job_id == tick_id("s.five", last)
    assert info.next_tick == last + 5 and info.misfire == "skip" and info.grace_s == 30


async def test_a_stopping_leader_hands_over_at_once(app: App) -> None:
    broker = await app.broker()
    a, b = app.scheduler(broker), app.scheduler(broker)
    runner = asyncio.create_task(a.run())
    while not a.leader:
        await asyncio.sleep(0)
    assert not (await b.step()).leader
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert (await b.step()).leader, "released on stop, not left to expire"


async def test_schedulers_of_different_apps_do_not_block_each_other(app: App) -> None:
    other = App(app.url, clock=app.clock)

    @other.every(seconds=5, name="other.five")
    async def five() -> None: ...

    broker = await app.broker()
    assert isinstance(Scheduler, type)
    assert (await app.scheduler(broker).step()).leader
    assert (await other.scheduler(broker).step()).leader


async def test_a_worker_with_scheduler_runs_the_ticks(app_url: str) -> None:
    app = App(app_url)
    ran: list[str] = []

    @app.every(seconds=0.25, name="s.quick")
    async def quick() -> None:
        from offload import current_job

        ran.append(current_job().id)

    try:
        worker = await app.worker(queues=("default",), scheduler=True, poll_s=0.05)
        runner = asyncio.create_task(worker.run())
        deadline = asyncio.get_running_loop().time() + 20
        while len(ran) < 4 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(runner, 30)
    finally:
        await app.close()
    assert len(ran) >= 4 and len(ran) == len(set(ran))
    assert all(job_id.startswith("tick:s.quick:") for job_id in ran)
