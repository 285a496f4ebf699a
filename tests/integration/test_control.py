"""Cancellation and progress on every backend, for async, thread and process tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from offload import App, JobCancelled, JobHandle, JobState
from offload.worker.worker import Worker
from tests.integration import controlapps as ca
from tests.integration.running import running_worker


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[App]:
    ca.app._override = None
    ca.app.use_broker(app_url)
    ca.ledger.clear()
    try:
        yield ca.app
    finally:
        await ca.app.close()


def running(app: App, **options: Any) -> AbstractAsyncContextManager[Worker]:
    # lease 1.5 s: a heartbeat every 0.5 s carries cancel requests
    return running_worker(
        app,
        stop_grace_s=5,
        **{"queues": ("ctl",), "lease_s": 1.5, "poll_s": 0.05, "processes": 2, **options},
    )


async def until(handle: JobHandle[Any], state: JobState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await handle.status() is not state:
        assert time.monotonic() < deadline, f"{handle.id} never reached {state}"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize("task", ["async_steps", "thread_steps", "process_steps"])
async def test_progress_is_visible_while_it_runs_and_watchable(app: App, task: str) -> None:
    async with running(app):
        job = await getattr(ca, task).enqueue(4, 0.3)
        seen = [(i.state, i.progress, i.progress_message) async for i in job.watch(interval=0.05)]
    assert seen[-1][0] is JobState.SUCCEEDED
    running_values = [p for s, p, _ in seen if s is JobState.RUNNING and p is not None]
    assert len(running_values) >= 2, f"intermediate progress must show while it runs: {seen}"
    assert running_values == sorted(running_values)
    info = await job.info()
    kind = task.split("_")[0]
    assert info.progress == 1.0 and info.progress_message == f"{kind} 4/4"


@pytest.mark.parametrize("task", ["async_steps", "thread_steps", "process_steps"])
async def test_the_last_report_is_kept_when_the_job_ends_at_once(app: App, task: str) -> None:
    async with running(app):
        job = await getattr(ca, task).enqueue(3, 0)  # ends before the next batched write
        assert await job.result(timeout=20) == "done"
    info = await job.info()
    assert info.progress == 1.0 and info.progress_message == f"{task.split('_')[0]} 3/3"


async def test_sync_handle_watch_and_cancel(app: App) -> None:
    async with running(app):
        job = (await ca.thread_steps.enqueue(3, 0.2)).sync
        states = await asyncio.to_thread(lambda: [i.state for i in job.watch(interval=0.05)])
        assert states[-1] is JobState.SUCCEEDED and JobState.RUNNING in states
    later = (await ca.async_sleep.options(delay=60).enqueue(1)).sync
    assert await asyncio.to_thread(later.cancel) is JobState.CANCELLED


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_pending_jobs_never_start(app: App) -> None:
    queued = await ca.async_sleep.enqueue(0)
    delayed = await ca.async_sleep.options(delay=0.3).enqueue(0)
    assert await queued.cancel() is JobState.CANCELLED
    assert await delayed.cancel() is JobState.CANCELLED
    async with running(app):
        canary = await ca.async_sleep.enqueue(0)
        assert await canary.result(timeout=10) == "woke"
        await asyncio.sleep(0.5)  # past the delayed job's ETA
    assert ca.ledger == [("started", canary.id)]
    for job in (queued, delayed):
        with pytest.raises(JobCancelled):
            await job.result(timeout=1)


async def test_a_job_waiting_for_its_retry_can_be_cancelled(app: App) -> None:
    async with running(app):
        job = await ca.fails.enqueue()
        await until(job, JobState.RETRYING)
        assert await job.cancel() is JobState.CANCELLED
        await asyncio.sleep(1.0)
    assert ca.ledger == [("attempt", job.id)], "it never ran again"
    assert await job.status() is JobState.CANCELLED


async def test_a_running_async_job_is_cancelled_at_its_next_await(app: App) -> None:
    async with running(app):
        job = await ca.async_sleep.enqueue(30)
        await until(job, JobState.RUNNING)
        assert await job.cancel() is JobState.RUNNING
        started = time.monotonic()
        with pytest.raises(JobCancelled):
            await job.result(timeout=10)
        assert time.monotonic() - started < 3, "within a heartbeat or two"
    info = await job.info()
    assert info.state is JobState.CANCELLED and info.cancel_requested
    assert info.errors[-1].reason == "cancelled"


async def test_a_running_sync_job_sees_cancel_requested(app: App) -> None:
    async with running(app):
        job = await ca.cooperative.enqueue(20)
        await until(job, JobState.RUNNING)
        await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=10)
        deadline = time.monotonic() + 5
        while ("saw cancel", job.id) not in ca.ledger:
            assert time.monotonic() < deadline, "the sync task never saw the request"
            await asyncio.sleep(0.02)


async def test_a_running_process_job_is_killed_and_its_slot_replaced(app: App) -> None:
    async with running(app, processes=1):
        job = await ca.process_sleep.enqueue(60)
        await until(job, JobState.RUNNING)
        await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=10)
        after = await ca.process_steps.enqueue(1, 0)
        assert await after.result(timeout=20) == "done", "a new child took the slot"


async def test_cancelling_a_finished_job_changes_nothing(app: App) -> None:
    async with running(app):
        job = await ca.async_sleep.enqueue(0)
        assert await job.result(timeout=10) == "woke"
    assert await job.cancel() is JobState.SUCCEEDED
    assert await job.result(timeout=1) == "woke"
