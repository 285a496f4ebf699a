"""Handles on started workflows: their steps, status, final result; cancel them.

See :mod:`offload.workflows` for how workflows run.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from offload.brokers.base import DAY, ErrorRecord, JobRecord, JobState
from offload.errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from offload.handles import JobHandle
from offload.message.envelope import Envelope

if TYPE_CHECKING:
    from offload.app import App
    from offload.brokers import Broker
    from offload.brokers.base import EnqueueRequest

__all__ = [
    "StagePlan",
    "StepInfo",
    "SyncWorkflowHandle",
    "WorkflowHandle",
    "WorkflowPlan",
    "WorkflowStatus",
    "plan_key",
    "ttl_for",
]

WorkflowStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]


class StagePlan(msgspec.Struct, kw_only=True):
    """One stage of a stored workflow: a task call or a group of them."""

    kind: Literal["task", "group"]
    tasks: list[str]


class WorkflowPlan(msgspec.Struct, kw_only=True):
    """What the broker keeps about a workflow, for its handle."""

    id: str
    created_at: float
    stages: list[StagePlan]

    def ids(self, stage: int) -> list[str]:
        """The job ids of one stage's steps."""
        if self.stages[stage].kind == "task":
            return [f"{self.id}.{stage}"]
        return [f"{self.id}.{stage}.{i}" for i in range(len(self.stages[stage].tasks))]


class StepInfo(msgspec.Struct, kw_only=True):
    """One step of a workflow as its handle reports it.

    ``state`` is ``None`` while the step does not exist yet (its stage has not started).
    """

    stage: int
    id: str
    task: str
    state: JobState | None
    attempts: int = 0
    error: str | None = None


def plan_key(wf_id: str) -> str:
    """The key-value key of a workflow's plan."""
    return f"offload:workflow:{wf_id}"


def ttl_for(app: App) -> float:
    """How long a workflow's records in the key-value store are kept."""
    return max(app.result_ttl, app.dead_ttl) + DAY


class WorkflowHandle:
    """A started workflow: its steps, status, final result; cancel it."""

    def __init__(self, app: App, workflow_id: str) -> None:
        self._app = app
        self.id = workflow_id

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    async def plan(self) -> WorkflowPlan:
        """The stored plan (stages and their tasks).

        Raises:
            JobNotFound: no such workflow (or it expired).
        """
        raw = await (await self._app.broker()).kv_get(plan_key(self.id))
        if raw is None:
            raise JobNotFound(self.id)
        return msgspec.json.decode(raw, type=WorkflowPlan)

    async def steps(self) -> list[StepInfo]:
        """Every step, stage by stage, with its state now."""
        plan = await self.plan()
        wanted = [
            (s, i, t)
            for s, st in enumerate(plan.stages)
            for i, t in zip(plan.ids(s), st.tasks, strict=True)
        ]
        records = await _records(await self._app.broker(), [i for _, i, _ in wanted])
        return [_step_info(s, i, t, records.get(i)) for s, i, t in wanted]

    async def status(self) -> WorkflowStatus:
        """``failed`` if a step died, ``cancelled`` if one was cancelled, ``succeeded``
        once the last stage did, ``running`` once a step started, else ``pending``."""
        return _status(await self.steps())

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait for the last stage and return its result (a list for a group).

        Raises:
            JobFailed: a step died (its error is carried, as for a job).
            JobCancelled: a step was cancelled.
            ResultTimeout: ``timeout`` passed first.
        """
        plan = await self.plan()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        broker = await self._app.broker()
        records: list[JobRecord] = []
        for s in range(len(plan.stages)):
            found = await _wait_stage(broker, plan.ids(s), deadline)
            if found is None:
                raise ResultTimeout(self.id, timeout or 0.0, "running")
            records = found
        last = plan.stages[-1]
        outputs = [self._value(task, rec) for task, rec in zip(last.tasks, records, strict=True)]
        return outputs[0] if last.kind == "task" else outputs

    def _value(self, task: str, rec: JobRecord) -> Any:
        known = self._app.tasks.get(task)
        rtype = known.spec.result_type if known is not None else None
        return JobHandle(self._app, rec.id, result_type=rtype)._outcome(rec)

    async def cancel(self) -> None:
        """Cancel every step: pending ones never start, running ones are asked to stop,
        and steps not yet created are reserved as cancelled so they never will be."""
        plan = await self.plan()
        ids = [i for s in range(len(plan.stages)) for i in plan.ids(s)]
        broker = await self._app.broker()
        states = await broker.cancel(ids)
        unborn = [i for i, st in zip(ids, states, strict=True) if st is None]
        if unborn:
            await broker.enqueue([_tombstone(self._app, i) for i in unborn])
            await broker.cancel(unborn)

    @property
    def sync(self) -> SyncWorkflowHandle:
        """The same handle with blocking methods."""
        return SyncWorkflowHandle(self)


class SyncWorkflowHandle:
    """A :class:`WorkflowHandle` whose methods block (for sync code)."""

    def __init__(self, handle: WorkflowHandle) -> None:
        self.aio = handle
        self.id = handle.id

    def steps(self) -> list[StepInfo]:
        """See :meth:`WorkflowHandle.steps`."""
        return self.aio._app.portal.call(self.aio.steps)

    def status(self) -> WorkflowStatus:
        """See :meth:`WorkflowHandle.status`."""
        return self.aio._app.portal.call(self.aio.status)

    def result(self, timeout: float | None = None) -> Any:
        """See :meth:`WorkflowHandle.result`."""
        return self.aio._app.portal.call(self.aio.result, timeout)

    def cancel(self) -> None:
        """See :meth:`WorkflowHandle.cancel`."""
        self.aio._app.portal.call(self.aio.cancel)


async def _records(broker: Broker, ids: list[str]) -> dict[str, JobRecord]:
    out: dict[str, JobRecord] = {}
    for i in range(0, len(ids), 500):
        for rec in await broker.get_jobs(ids[i : i + 500]):
            if rec is not None:
                out[rec.id] = rec
    return out


def _step_info(stage: int, job_id: str, task: str, rec: JobRecord | None) -> StepInfo:
    if rec is None:
        return StepInfo(stage=stage, id=job_id, task=task, state=None)
    last = rec.errors[-1] if rec.errors else None
    error = f"{last.type}: {last.message}" if last is not None and rec.state.is_final else None
    return StepInfo(
        stage=stage, id=job_id, task=task, state=rec.state, attempts=rec.attempts, error=error
    )


def _status(steps: list[StepInfo]) -> WorkflowStatus:
    states = [s.state for s in steps]
    if JobState.DEAD in states:
        return "failed"
    if JobState.CANCELLED in states:
        return "cancelled"
    last = max(s.stage for s in steps)
    if all(s.state is JobState.SUCCEEDED for s in steps if s.stage == last):
        return "succeeded"
    started = (JobState.RUNNING, JobState.SUCCEEDED, JobState.RETRYING)
    return "running" if any(st in started for st in states) else "pending"


async def _wait_stage(
    broker: Broker, ids: list[str], deadline: float | None
) -> list[JobRecord] | None:
    """The stage's records once all succeeded; ``None`` at the deadline. Raises for a
    dead or cancelled step. Finished steps are not read again."""
    loop = asyncio.get_running_loop()
    done: dict[str, JobRecord] = {}
    pause = 0.02
    while True:
        todo = [i for i in ids if i not in done]
        records = await _records(broker, todo)
        for rec in records.values():
            _raise_if_failed(rec)
            if rec.state is JobState.SUCCEEDED:
                done[rec.id] = rec
        if len(done) == len(ids):
            return [done[i] for i in ids]
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return None
        wait = 1.0 if left is None else min(1.0, left)
        # Steps finish roughly in order: waiting on the last one wakes the fewest times.
        pending = next((i for i in reversed(todo) if i in records and i not in done), None)
        if pending is not None:
            await broker.wait_job(pending, wait)
        else:
            await asyncio.sleep(min(pause, wait))  # the stage is not created yet
            pause = min(pause * 2, 0.5)


def _raise_if_failed(rec: JobRecord) -> None:
    if rec.state is JobState.CANCELLED:
        raise JobCancelled(rec.id)
    if rec.state is JobState.DEAD:
        last = rec.errors[-1] if rec.errors else ErrorRecord(reason="unknown")
        raise JobFailed(rec.id, last.type, last.message, last.traceback, last.reason)


def _tombstone(app: App, job_id: str) -> EnqueueRequest:
    """A cancelled placeholder that holds a step's id so the step is never created."""
    env = Envelope(
        id=job_id,
        name="offload.cancelled",
        queue=app.default_queue,
        eta=app.clock.now() + 10 * 365 * DAY,
    )
    req = app.request_for(env, bounded=False, result_ttl=ttl_for(app))
    return req
