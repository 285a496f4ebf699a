"""Chains, groups, chords and callbacks on every backend, run by a real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from offload import App, JobCancelled, JobFailed, JobState
from offload.worker.worker import Worker
from offload.workflows import WorkflowHandle, chain, chord, group
from tests.integration import flowapps as fa
from tests.integration.running import running_worker


@pytest.fixture
async def app(app_url: str) -> AsyncIterator[App]:
    fa.app._override = None
    fa.app.use_broker(app_url)
    fa.ledger.clear()
    try:
        yield fa.app
    finally:
        await fa.app.close()


def running(app: App, **options: Any) -> AbstractAsyncContextManager[Worker]:
    return running_worker(app, **{"queues": ("wf",), "lease_s": 5.0, "poll_s": 0.05, **options})


async def test_a_chain_passes_each_result_to_the_next(app: App) -> None:
    async with running(app):
        flow = await chain(fa.add.s(1, 2), fa.double.s(), fa.add.s(10)).enqueue()
        assert await flow.result(timeout=20) == 16
    steps = await flow.steps()
    assert [s.id for s in steps] == [f"{flow.id}.0", f"{flow.id}.1", f"{flow.id}.2"]
    assert [s.task for s in steps] == ["wf.add", "wf.double", "wf.add"]
    assert all(s.state is JobState.SUCCEEDED for s in steps)
    assert await flow.status() == "succeeded"
    assert await WorkflowHandle(app, flow.id).result(timeout=1) == 16, "found again by id"


async def test_a_group_runs_in_parallel_and_returns_results_in_order(app: App) -> None:
    async with running(app, concurrency=8):
        flow = await group(fa.square.s(i) for i in range(20)).enqueue()
        assert await flow.result(timeout=20) == [i * i for i in range(20)]


@pytest.mark.timeout(180)
async def test_a_chord_of_1000_calls_back_once_with_1000_results(app: App) -> None:
    started = time.perf_counter()
    async with running(app, concurrency=50):
        flow = await chord(group(fa.add.s(i, i) for i in range(1000)), fa.total.s()).enqueue()
        assert await flow.result(timeout=150) == 2 * sum(range(1000))
        await asyncio.sleep(0.3)  # any late duplicate join would have fired by now
    elapsed = time.perf_counter() - started
    assert fa.ledger == [("total", 1000)], "the callback ran exactly once, with every result"
    callback = await app.job(f"{flow.id}.1").info()
    assert callback.state is JobState.SUCCEEDED and callback.attempts == 1
    print(f"\n[{app.url.partition(':')[0]}] chord of 1000: {elapsed:.2f}s")


async def test_a_failed_step_stops_the_chain_and_shows_on_the_handle(app: App) -> None:
    async with running(app):
        flow = await chain(fa.add.s(1, 1), fa.fail.s(), fa.double.s()).enqueue()
        with pytest.raises(JobFailed, match="cannot handle 2") as failed:
            await flow.result(timeout=20)
    assert failed.value.job_id == f"{flow.id}.1"
    steps = await flow.steps()
    assert [s.state for s in steps] == [JobState.SUCCEEDED, JobState.DEAD, None]
    assert steps[1].attempts == 2, "the step's own retries were used first"
    assert steps[1].error == "ValueError: cannot handle 2"
    assert await flow.status() == "failed"


async def test_retries_apply_per_step(app: App) -> None:
    async with running(app):
        flow = await chain(fa.flaky.s(1), fa.flaky.s(), fa.double.s()).enqueue()
        assert await flow.result(timeout=20) == 6
    assert [s.attempts for s in await flow.steps()] == [2, 2, 1]


async def test_a_group_in_the_middle_of_a_chain_is_a_chord(app: App) -> None:
    async with running(app):
        flow = await chain(
            fa.add.s(1, 1), group(fa.double.s(), fa.add.s(5)), fa.total.s(bonus=100)
        ).enqueue()
        assert await flow.result(timeout=20) == 4 + 7 + 100


async def test_a_failed_chord_member_skips_the_callback_and_calls_its_errback(app: App) -> None:
    async with running(app):
        body = fa.total.options(on_failure=fa.note.s("chord failed")).s()
        flow = await chord([fa.add.s(1, 1), fa.fail.s(7), fa.add.s(2, 2)], body).enqueue()
        with pytest.raises(JobFailed):
            await flow.result(timeout=20)
        await wait_for(lambda: ("chord failed", f"{flow.id}.0.1") in fa.ledger)
        await asyncio.sleep(0.3)
    assert ("total", 3) not in fa.ledger
    assert fa.ledger.count(("chord failed", f"{flow.id}.0.1")) == 1
    assert await flow.status() == "failed"


async def test_on_success_and_on_failure_callbacks(app: App) -> None:
    async with running(app):
        ok = await fa.add.options(on_success=fa.note.s("sum")).enqueue(2, 3)
        bad = await fa.fail.options(on_failure=fa.note.s("died")).enqueue(1)
        await wait_for(lambda: ("sum", 5) in fa.ledger and ("died", bad.id) in fa.ledger)
    assert (await app.job(f"{ok.id}.ok.0").status()) is JobState.SUCCEEDED
    assert (await app.job(f"{bad.id}.err.0").status()) is JobState.SUCCEEDED


async def test_a_step_settled_twice_cannot_start_its_successor_twice(app: App) -> None:
    from offload.message.envelope import decode_envelope

    flow = await chain(fa.add.s(1, 1), fa.double.s()).enqueue()
    broker = await app.broker()
    [first] = await broker.claim(["wf"], "w", 1, 5.0)
    env = decode_envelope(first.payload)
    again = [app.follow_ups(env, 2, "success") for _ in range(2)]
    outcomes = [await broker.enqueue(reqs) for reqs in again]
    assert [o.status for o in outcomes[0]] == ["queued"]
    assert [o.status for o in outcomes[1]] == ["duplicate"]
    assert outcomes[1][0].job_id == f"{flow.id}.1"


async def test_cancelling_a_workflow_stops_it_and_its_future_steps(app: App) -> None:
    async with running(app, lease_s=1.5):
        flow = await chain(fa.slow.s(1), fa.double.s(), fa.double.s()).enqueue()
        first = app.job(f"{flow.id}.0")
        await wait_for_state(first, JobState.RUNNING)
        await flow.cancel()
        with pytest.raises(JobCancelled):
            await flow.result(timeout=20)
    assert [s.state for s in await flow.steps()] == [JobState.CANCELLED] * 3
    assert await flow.status() == "cancelled"


async def test_sync_workflow_api(app: App) -> None:
    async with running(app):
        handle = await asyncio.to_thread(chain(fa.add.s(2, 2), fa.double.s()).enqueue_sync)
        assert await asyncio.to_thread(handle.result, 20) == 8
        assert await asyncio.to_thread(handle.status) == "succeeded"


async def test_unknown_tasks_and_empty_groups_are_refused(app: App) -> None:
    from offload import ConfigurationError, Signature

    with pytest.raises(ConfigurationError, match="does not know: nope"):
        await chain(fa.add.s(1, 1), Signature(name="nope")).enqueue()
    with pytest.raises(ConfigurationError, match="at least one"):
        group([])
    with pytest.raises(ConfigurationError, match="header must be a group"):
        chord(chain(fa.add.s(1, 1)), fa.total.s())


async def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def wait_for_state(handle: Any, state: JobState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await handle.status() is not state:
        assert time.monotonic() < deadline, f"never reached {state}"
        await asyncio.sleep(0.02)
