"""The worker and the app together, on every backend: what a user relies on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from offload import (
    App,
    BrokerUnavailable,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobState,
    PayloadTooLarge,
    ResultTimeout,
    SerializationError,
)
from offload.brokers.base import EnqueueRequest
from offload.worker.worker import Worker
from tests.integration import apps
from tests.integration.running import running_worker


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[App]:
    apps.app._override = None
    apps.app.use_broker(app_url)
    apps.ledger.clear()
    try:
        yield apps.app
    finally:
        await apps.app.close()


def running(app: App, **options: Any) -> AbstractAsyncContextManager[Worker]:
    return running_worker(app, **{"queues": ("t",), "lease_s": 5.0, "poll_s": 0.1, **options})


async def test_results_of_async_and_sync_tasks(app: App) -> None:
    async with running(app):
        a = await apps.add.enqueue(2, 3)
        s = await apps.sync_add.enqueue(4, b=5)
        assert await a.result(timeout=10) == 5
        assert await s.result(timeout=10) == 9
        info = await a.info()
        assert info.state is JobState.SUCCEEDED and info.attempts == 1
        assert info.enqueued_at <= (info.started_at or 0) <= (info.finished_at or 0)


async def test_arguments_are_converted_to_the_annotated_types(app: App) -> None:
    async with running(app):
        job = await apps.norm.enqueue(apps.Point(3, 4))  # sent as a JSON object
        assert await job.result(timeout=10) == 5.0


async def test_enqueue_many_in_one_call(app: App) -> None:
    async with running(app, concurrency=20):
        jobs = await apps.add.enqueue_many([(i, i) for i in range(200)] + [{"a": 1, "b": 1}])
        results = [await j.result(timeout=30) for j in jobs]
    assert results == [2 * i for i in range(200)] + [2]


async def test_retries_until_success_count_attempts(app: App) -> None:
    async with running(app):
        job = await apps.flaky.enqueue(2)
        assert await job.result(timeout=10) == 3
        info = await job.info()
    assert info.attempts == 3
    assert [e.type for e in info.errors] == ["ConnectionError", "ConnectionError"]
    assert [a for (_, a) in apps.ledger] == [1, 2, 3]


async def test_exhausted_retries_end_dead_with_the_remote_traceback(app: App) -> None:
    async with running(app):
        job = await apps.flaky.enqueue(99)
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
    assert failed.value.exc_type == "ConnectionError"
    assert "attempt 4 failed" in failed.value.exc_message
    assert "raise ConnectionError" in failed.value.traceback
    info = await job.info()
    assert info.state is JobState.DEAD and info.attempts == 4 and len(info.errors) == 4


async def test_exceptions_outside_retry_on_are_not_retried(app: App) -> None:
    async with running(app):
        job = await apps.not_retried.enqueue()
        with pytest.raises(JobFailed, match="a bug"):
            await job.result(timeout=10)
    assert (await job.info()).attempts == 1


async def test_task_can_ask_for_a_retry_or_cancel_itself(app: App) -> None:
    async with running(app):
        again = await apps.explicit_retry.enqueue()
        stop = await apps.cancels_itself.enqueue()
        assert await again.result(timeout=10) == "ready"
        with pytest.raises(JobCancelled):
            await stop.result(timeout=10)
    assert (await again.info()).errors[0].reason == "retry_requested"


async def test_async_time_limit_cancels_the_task(app: App) -> None:
    async with running(app):
        job = await apps.slow_async.enqueue()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
    assert failed.value.reason == "timeout"


async def test_sync_time_limit_frees_the_slot(app: App) -> None:
    async with running(app, concurrency=1):
        stuck = await apps.slow_thread.enqueue()
        started = time.monotonic()
        with pytest.raises(JobFailed) as failed:
            await stuck.result(timeout=10)
        after = await apps.add.enqueue(1, 1)
        assert await after.result(timeout=10) == 2
    assert failed.value.reason == "timeout"
    assert time.monotonic() - started < 4, "the slot is freed at the limit, not after the 5 s"


async def test_process_time_limit_kills_the_child_and_the_pool_recovers(app: App) -> None:
    async with running(app, concurrency=2, processes=1):
        stuck = await apps.slow_process.enqueue()
        with pytest.raises(JobFailed) as failed:
            await stuck.result(timeout=30)
        assert failed.value.reason == "timeout"
        job = await apps.cpu.enqueue(1000)
        assert await job.result(timeout=30) == sum(i * i for i in range(1000))


async def test_poison_is_buried_with_its_reason_and_blocks_nothing(app: App) -> None:
    broker = await app.broker()
    now = app.clock.now()
    await broker.enqueue(
        [EnqueueRequest(id="garbage", queue="t", name="?", payload=b"\x00\x01", enqueued_at=now)]
    )
    from offload.admin import _enqueue_raw

    unknown = await _enqueue_raw(app, "t.nobody_registered_this", [], {}, "t", None, None)
    wrong_arity = await _enqueue_raw(app, "t.add", [1], {}, "t", None, None)
    wrong_type = await _enqueue_raw(app, "t.add", ["x", 1], {}, "t", None, None)
    good = await apps.add.enqueue(1, 2)
    async with running(app):
        assert await good.result(timeout=10) == 3
        for job_id, reason in [
            ("garbage", "decode_error"),
            (unknown, "unknown_task"),
            (wrong_arity, "bad_arguments"),
            (wrong_type, "bad_arguments"),
        ]:
            rec = await broker.wait_job(job_id, 10)
            assert rec is not None and rec.state is JobState.DEAD, job_id
            assert rec.errors[-1].reason == reason
    rec = await broker.get_job(unknown)
    assert rec is not None and "t.nobody_registered_this" in rec.errors[-1].message
    assert "Registered:" in rec.errors[-1].message


async def test_unencodable_argument_is_named_and_nothing_is_written(app: App) -> None:
    with pytest.raises(SerializationError, match=r"argument 1 of 't\.add' .*object"):
        await apps.add.enqueue(1, object())  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        await apps.record.enqueue("x" * (2 << 20), 1)
    [stats] = await (await app.broker()).stats(["t"])
    assert stats.counters.enqueued == 0


async def test_unserialisable_result_goes_dead(app: App) -> None:
    async with running(app):
        job = await apps.unserialisable.enqueue()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
    assert failed.value.reason == "result_not_serializable"


async def test_cancel_a_queued_job_and_a_running_one(app: App) -> None:
    queued = await apps.add.enqueue(1, 1)
    assert await queued.cancel() is JobState.CANCELLED
    async with running(app, lease_s=1.5):  # heartbeat every 0.5 s carries the request
        busy = await apps.sleeper.enqueue(30)
        while await busy.status() is not JobState.RUNNING:
            await asyncio.sleep(0.02)
        assert await busy.cancel() is JobState.RUNNING
        with pytest.raises(JobCancelled):
            await busy.result(timeout=10)
    assert await queued.status() is JobState.CANCELLED


async def test_progress_is_reported_and_watchable(app: App) -> None:
    async with running(app):
        job = await apps.reporter.enqueue(4, 0.3)
        seen = [(i.state, i.progress) async for i in job.watch(interval=0.05)]
    states = [s for s, _ in seen]
    assert states[-1] is JobState.SUCCEEDED
    progresses = [p for _, p in seen if p is not None]
    assert progresses == sorted(progresses) and progresses[-1] == 1.0
    assert len(progresses) >= 2, "intermediate progress must be visible while it runs"
    assert (await job.info()).progress_message == "step 4/4"


async def test_dedupe_key_returns_the_existing_job(app: App) -> None:
    first = await apps.add.options(dedupe_key="once").enqueue(1, 1)
    second = await apps.add.options(dedupe_key="once").enqueue(2, 2)
    assert second.duplicate and second.id == first.id and not first.duplicate


async def test_delayed_job_does_not_start_early(app: App) -> None:
    async with running(app):
        job = await apps.add.options(delay=0.6).enqueue(1, 1)
        assert await job.status() is JobState.SCHEDULED
        assert await job.result(timeout=10) == 2
        info = await job.info()
    assert (info.started_at or 0) - info.enqueued_at >= 0.6


async def test_priority_runs_first(app: App) -> None:
    for i in range(5):
        await apps.record.options(priority=0).enqueue("low", i)
    await apps.record.options(priority=9).enqueue("high", 0)
    async with running(app, concurrency=1):
        while len(apps.ledger) < 6:
            await asyncio.sleep(0.02)
    assert apps.ledger[0] == ("high", 0)
    assert [n for k, n in apps.ledger if k == "low"] == list(range(5))


async def test_per_key_order_holds_under_concurrency(app: App) -> None:
    jobs = []
    for n in range(40):
        for key in ("k1", "k2", "k3", "k4", "k5"):
            jobs.append(apps.record.options(key=key).s(key, n))
    handles = []
    for sig in jobs:
        handles.append(await apps.record.options(key=sig.args[0]).enqueue(*sig.args))
    async with running(app, concurrency=20):
        for h in handles:
            await h.result(timeout=30)
    for key in ("k1", "k2", "k3", "k4", "k5"):
        assert [n for k, n in apps.ledger if k == key] == list(range(40))


async def test_graceful_shutdown_releases_what_is_still_running(app: App) -> None:
    job = await apps.sleeper.enqueue(30)
    worker = await app.worker(queues=("t",), lease_s=30, grace_s=0.3, poll_s=0.1)
    task = asyncio.create_task(worker.run())
    while await job.status() is not JobState.RUNNING:
        await asyncio.sleep(0.02)
    worker.stop()
    await asyncio.wait_for(task, 10)
    info = await job.info()
    assert info.state is JobState.QUEUED, "released at once, not left to its 30 s lease"
    assert info.attempts == 0, "the interrupted attempt is not counted"


async def test_graceful_shutdown_lets_short_jobs_finish(app: App) -> None:
    job = await apps.sleeper.enqueue(0.3)
    worker = await app.worker(queues=("t",), grace_s=5, poll_s=0.1)
    task = asyncio.create_task(worker.run())
    while await job.status() is not JobState.RUNNING:
        await asyncio.sleep(0.02)
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert await job.status() is JobState.SUCCEEDED


async def test_result_errors_say_what_happened(app: App) -> None:
    job = await apps.add.enqueue(1, 1)
    with pytest.raises(ResultTimeout, match=r"did not finish within 0\.2s \(it is queued\)"):
        await job.result(timeout=0.2)
    with pytest.raises(JobNotFound):
        await app.job("no-such-job").result(timeout=0.1)


async def test_sync_api_from_plain_threads(app: App) -> None:
    async with running(app):

        def sync_caller() -> int:
            handle = apps.add.enqueue_sync(20, 22)
            assert handle.status() in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
            return handle.result(timeout=10)

        assert await asyncio.to_thread(sync_caller) == 42


async def test_burst_worker_drains_and_stops(app: App) -> None:
    await apps.add.enqueue_many([(i, 1) for i in range(50)])
    stats = await app.run_worker(queues=("t",), burst=True, poll_s=0.05, concurrency=8)
    assert stats.succeeded == 50


async def test_a_task_blocking_the_event_loop_keeps_its_lease(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease is renewed from its own thread, so the job is never handed to another
    worker, and the blocked loop is reported with the job that blocks it."""
    import threading

    from offload.brokers import open_broker

    shared = await app.broker()
    recovered: list[int] = []
    stop = threading.Event()

    def reaper() -> None:  # another worker's maintenance, running all along
        async def loop() -> None:
            broker = shared if not shared.capabilities.shared else open_broker(shared.url)
            if broker is not shared:
                await broker.open()
            try:
                while not stop.is_set():
                    recovered.append(await broker.recover_expired())
                    await asyncio.sleep(0.1)
            finally:
                if broker is not shared:
                    await broker.close()

        asyncio.run(loop())

    thread = threading.Thread(target=reaper)
    thread.start()
    try:
        async with running(app, lease_s=1.2):
            job = await apps.blocks_the_loop.enqueue(4.0)  # more than three leases
            assert await job.result(timeout=30) == "done"
    finally:
        stop.set()
        thread.join()
    info = await job.info()
    assert (info.attempts, sum(recovered)) == (1, 0), "never reclaimed, never run twice"
    assert any(
        "event loop has been blocked" in r.message and "t.blocks_the_loop" in r.message
        for r in caplog.records
    )


async def test_burst_worker_runs_what_its_last_outcome_enqueued(app: App) -> None:
    """Follow-ups ride in the settlement; a burst worker must not stop while it is written."""
    for i in range(5):
        await apps.add.options(on_success=apps.after.s()).enqueue(i, 1)
    await app.run_worker(queues=("t",), burst=True, poll_s=0.01)
    assert sorted(v for k, v in apps.ledger if k == "after") == [1, 2, 3, 4, 5]


async def test_a_refused_earlier_outcome_leaves_the_jobs_new_run_alone() -> None:
    """The server goes away after a job ended: its outcome cannot be written, its lease
    cannot be renewed, it expires, and when the server is back this same worker claims the
    job again. The first run's outcome is then refused; that must neither drop the new
    run's lease nor stop it: the job runs twice (the outage explains one re-run), not three
    times. The memory broker is used on its own: the test stands in for the outage by
    patching the broker object the worker and its lease keeper share."""
    apps.app._override = None
    apps.app.use_broker("memory://refused-earlier-outcome")
    apps.ledger.clear()
    broker = await apps.app.broker()
    real_settle, real_extend = broker.settle, broker.extend
    outage = asyncio.Event()
    back = asyncio.Event()

    async def settle(settlements: Any) -> list[bool]:
        if outage.is_set():  # the first run's outcome waits for the server
            await back.wait()
        return await real_settle(settlements)

    async def extend(deliveries: Any, lease_s: float) -> Any:
        if outage.is_set() and not back.is_set():
            raise BrokerUnavailable("memory://: the test's outage")
        return await real_extend(deliveries, lease_s)

    broker.settle = settle  # type: ignore[method-assign]
    broker.extend = extend  # type: ignore[method-assign]
    try:
        async with running(apps.app, lease_s=1.0) as worker:
            outage.set()
            job = await apps.longer_again.enqueue(2.5)  # the second run outlives 2 leases
            runs = lambda: sum(k == "longer_again" for k, _ in apps.ledger)  # noqa: E731
            deadline = time.monotonic() + 10
            while runs() < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert runs() == 2, "the expired job was not claimed again"
            back.set()  # the server is back: the first outcome is refused
            assert await job.result(timeout=15) == 2
            assert worker.stats.settle_refused == 1
        assert runs() == 2, "the new run lost its lease to the earlier run's refusal"
    finally:
        await apps.app.close()


async def test_a_job_handed_back_while_its_expired_run_still_runs_here() -> None:
    """A run's lease expires unnoticed (renewals fail) and the job is recovered; this same
    worker claims it again while the first run still runs. The first run is stopped as
    lease-lost and the new one runs to its end with its own context: the job's result is
    the second run's, and the first run never finishes."""
    apps.app._override = None
    apps.app.use_broker("memory://handed-back-while-running")
    apps.ledger.clear()
    broker = await apps.app.broker()
    real_extend = broker.extend
    renewals_fail = asyncio.Event()

    async def extend(deliveries: Any, lease_s: float) -> Any:
        if renewals_fail.is_set():
            raise BrokerUnavailable("memory://: the test's outage")
        return await real_extend(deliveries, lease_s)

    broker.extend = extend  # type: ignore[method-assign]
    try:
        async with running(apps.app, lease_s=1.0) as worker:
            renewals_fail.set()
            job = await apps.shorter_again.enqueue(30.0)
            assert await job.result(timeout=15) == 2
            assert worker.stats.lost == 1  # the first run, stopped as lease-lost
        keys = [k for k, _ in apps.ledger]
        assert keys.count("shorter_again") == 2
        assert "shorter_again_first_run_ended" not in keys
    finally:
        await apps.app.close()
