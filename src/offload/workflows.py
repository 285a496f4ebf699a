"""Workflows: chains, groups and chords of tasks, kept in the broker.

::

    from offload.workflows import chain, chord, group

    flow = await chain(fetch.s(url), parse.s(), store.s()).enqueue()   # each result feeds the next
    flow = await group(resize.s(p) for p in photos).enqueue()          # in parallel
    flow = await chord(group(count.s(p) for p in pages), total.s()).enqueue()  # total(results)
    print(await flow.result(timeout=60))

A workflow is a list of *stages*: one task call, or a group of calls run in parallel.
Each stage receives the previous stage's output as its first argument (a group's output
is the list of its members' results, in order). ``chain(a.s(), group(...), b.s())`` is a
chord in the middle of a chain.

How it survives crashes: nothing lives in a process. Every step's job id is fixed when
the workflow starts (``<workflow>.<stage>`` and ``<workflow>.<stage>.<member>``), and the
next stage is enqueued *in the same atomic step* as the previous step's ack (the worker's
``follow_ups``), so a step that runs twice cannot start its successor twice. A group
followed by more stages carries a chord id; each member's ack enqueues a small join job
(``offload.chord_join``, id ``<member>.join``) that checks whether every member has
finished. The last join to see them all done enqueues the next stage with the results;
two joins doing so at once are harmless, because that stage's id is fixed.

A step that dies stops the workflow (later stages are never created) and the handle
reports it; retries apply per step as for any job. ``on_success=`` / ``on_failure=``
callbacks on any job are enqueued atomically with its outcome, with ids
``<job>.ok.<n>`` / ``<job>.err.<n>``.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec

from offload.brokers.base import DAY, ErrorRecord, JobRecord, JobState
from offload.errors import ConfigurationError, JobCancelled, JobFailed, JobNotFound, ResultTimeout
from offload.flow.limits import admit
from offload.handles import JobHandle
from offload.message.codecs import codec_for_payload
from offload.message.envelope import Signature
from offload.specs import Binder, TaskSpec
from offload.tasks import CallOptions, Task

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from offload.app import App
    from offload.brokers import Broker
    from offload.brokers.base import EnqueueRequest
    from offload.message.envelope import Envelope

__all__ = [
    "JOIN_TASK",
    "StepInfo",
    "SyncWorkflowHandle",
    "Workflow",
    "WorkflowHandle",
    "WorkflowPlan",
    "chain",
    "chord",
    "follow_ups",
    "group",
    "internal_tasks",
]

#: The internal task that joins a chord's members.
JOIN_TASK = "offload.chord_join"
#: A group stage, written into an envelope's ``chain`` as a signature of this name.
GROUP_STAGE = "offload:group"

Stage = Signature | list[Signature]
WorkflowStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]


# --------------------------------------------------------------------------- building


class Workflow:
    """Stages to run one after another; build with :func:`chain`, :func:`group`,
    :func:`chord`, then :meth:`enqueue`."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    def __repr__(self) -> str:
        names = [f"[{len(s)}]" if isinstance(s, list) else s.name for s in self.stages]
        return f"<Workflow {' -> '.join(names)}>"

    async def enqueue(self, app: App | None = None) -> WorkflowHandle:
        """Start the workflow: store its plan and enqueue its first stage.

        ``app`` defaults to the app of the first task signature (``task.s(...)``).

        Raises:
            ConfigurationError: a step names a task the app does not know, or a group
                is empty.
            QueueFull: a bounded queue is full (see ``App.queue``).
        """
        app = app or _app_of(self.stages)
        wf_id = uuid.uuid4().hex
        stages = _compile(self.stages, wf_id)
        _check_tasks(app, stages)
        plan = WorkflowPlan(id=wf_id, created_at=app.clock.now(), stages=_plan(stages))
        broker = await app.broker()
        await broker.kv_set(_plan_key(wf_id), msgspec.json.encode(plan), ttl_s=_ttl(app))
        requests = stage_requests(app, stages, None)
        await admit(broker, requests, app.queue_config, app._retry_after)
        return WorkflowHandle(app, wf_id)

    def enqueue_sync(self, app: App | None = None) -> SyncWorkflowHandle:
        """:meth:`enqueue` for sync code."""
        app = app or _app_of(self.stages)
        return app.portal.call(self.enqueue, app).sync


Step = Signature | Workflow


def chain(*steps: Step) -> Workflow:
    """Run ``steps`` one after another, each receiving the previous result first."""
    stages: list[Stage] = []
    for step in steps:
        stages += step.stages if isinstance(step, Workflow) else [_signature(step)]
    return Workflow(stages)


def group(*members: Signature | Iterable[Signature]) -> Workflow:
    """Run calls in parallel; the group's output is the list of their results, in order.

    Takes signatures, or one iterable of them: ``group(f.s(i) for i in range(10))``.
    """
    flat: list[Signature] = []
    for m in members:
        flat += [m] if isinstance(m, Signature) else [_signature(x) for x in m]
    if not flat:
        raise ConfigurationError("A group needs at least one task call.")
    return Workflow([flat])


def chord(header: Workflow | Iterable[Signature], body: Step) -> Workflow:
    """Run ``header`` (a group) in parallel, then ``body`` once with all the results."""
    head = header if isinstance(header, Workflow) else group(header)
    if len(head.stages) != 1 or not isinstance(head.stages[0], list):
        raise ConfigurationError("A chord's header must be a group: chord(group(...), cb.s()).")
    return chain(head, body)


def _signature(step: object) -> Signature:
    if not isinstance(step, Signature):
        raise TypeError(
            f"Workflow steps are task calls written with task.s(...), not {type(step).__name__}"
        )
    return step


def _app_of(stages: Sequence[Stage]) -> App:
    for stage in stages:
        for sig in stage if isinstance(stage, list) else [stage]:
            app = getattr(sig, "app", None)
            if app is not None:
                return cast("App", app)
    raise ConfigurationError("Pass the app: workflow.enqueue(app) (no step was made by task.s()).")


def _compile(stages: Sequence[Stage], wf_id: str) -> list[Signature]:
    """The stages with their fixed job ids, as they travel in envelopes."""
    out = []
    for s, stage in enumerate(stages):
        if isinstance(stage, list):
            members = [_with_id(m, f"{wf_id}.{s}.{i}") for i, m in enumerate(stage)]
            out.append(
                Signature(name=GROUP_STAGE, args=[members], options={"job_id": f"{wf_id}.{s}"})
            )
        else:
            out.append(_with_id(stage, f"{wf_id}.{s}"))
    return out


def _with_id(sig: Signature, job_id: str) -> Signature:
    return Signature(
        name=sig.name,
        args=list(sig.args),
        kwargs=dict(sig.kwargs),
        options={**sig.options, "job_id": job_id},
    )


def _members(stage: Signature) -> list[Signature]:
    return msgspec.convert(stage.args[0], list[Signature])


def _check_tasks(app: App, stages: Sequence[Signature]) -> None:
    names = {m.name for s in stages for m in (_members(s) if s.name == GROUP_STAGE else [s])}
    unknown = sorted(names - set(app.tasks))
    if unknown:
        raise ConfigurationError(
            f"Workflow steps name tasks this app does not know: {', '.join(unknown)}. "
            "Build steps with task.s(...) from tasks registered on the app."
        )


# --------------------------------------------------------------------------- enqueueing steps


def stage_requests(
    app: App, stages: Sequence[Signature], value: tuple[Any] | None
) -> list[EnqueueRequest]:
    """The jobs that start ``stages[0]``; ``value`` (a 1-tuple) is prepended to the
    arguments of each of its calls. Later stages ride along to be started in turn."""
    first, rest = stages[0], list(stages[1:])
    prefix = list(value) if value is not None else []
    if first.name != GROUP_STAGE:
        return [_call_request(app, first, prefix, chain=rest)]
    members = _members(first)
    fields: dict[str, Any] = {}
    if rest:
        fields = {"chord": first.options["job_id"], "chord_size": len(members), "chain": rest}
    return [_call_request(app, m, prefix, **fields) for m in members]


def _call_request(app: App, sig: Signature, prefix: list[Any], **fields: Any) -> EnqueueRequest:
    task = app.tasks.get(sig.name) or internal_tasks(app).get(sig.name)
    if task is None:
        raise ConfigurationError(
            f"A workflow step or callback names the task {sig.name!r}, which this app does "
            "not know: register it on the app the workers run."
        )
    return app._request(
        task, [*prefix, *sig.args], dict(sig.kwargs), call_options(sig.options), **fields
    )


def call_options(options: dict[str, Any]) -> CallOptions:
    """A signature's options as enqueue options (after a trip through JSON)."""
    opts = dict(options)
    opts.pop("connection", None)
    for name in ("on_success", "on_failure"):
        if name in opts and not isinstance(opts[name], Signature):
            opts[name] = msgspec.convert(opts[name], Signature)
    if isinstance(opts.get("delay"), str):
        opts["delay"] = msgspec.convert(opts["delay"], timedelta)
    if isinstance(opts.get("eta"), str):
        opts["eta"] = datetime.fromisoformat(opts["eta"])
    return cast("CallOptions", opts)


def follow_ups(
    app: App, env: Envelope, value: Any, outcome: Literal["success", "failure"]
) -> list[EnqueueRequest]:
    """What a step's outcome starts, enqueued atomically with it (see the module docs)."""
    out: list[EnqueueRequest] = []
    if outcome == "success":
        if env.chord:
            out.append(_join_request(app, env, failed=False))
        elif env.chain:
            out += stage_requests(app, env.chain, (value,))
        out += _callbacks(app, env.on_success, f"{env.id}.ok", value)
    else:
        out += _callbacks(app, env.on_failure, f"{env.id}.err", env.id)
        if env.chord:
            out.append(_join_request(app, env, failed=True))
    return out


def _callbacks(
    app: App, sigs: Sequence[Signature], prefix: str, value: Any
) -> list[EnqueueRequest]:
    out = []
    for i, sig in enumerate(sigs):
        opts = {"job_id": f"{prefix}.{i}", **sig.options}
        out.append(
            _call_request(
                app,
                Signature(name=sig.name, args=sig.args, kwargs=sig.kwargs, options=opts),
                [value],
            )
        )
    return out


# --------------------------------------------------------------------------- chords


def _join_request(app: App, env: Envelope, *, failed: bool) -> EnqueueRequest:
    assert env.chord is not None
    sig = Signature(
        name=JOIN_TASK,
        args=[env.chord, env.chord_size, msgspec.to_builtins(env.chain), failed, env.id],
        options={
            "job_id": f"{env.id}.join" + (".failed" if failed else ""),
            "queue": env.queue,
            "priority": env.priority,
            "result_ttl": 3600.0,
            # One join of a chord at a time: each reads and advances the same watermark,
            # and once one has fired the rest return after a single read.
            "key": f"~chord:{env.chord}",
        },
    )
    return _call_request(app, sig, [])


_INTERNAL: weakref.WeakKeyDictionary[App, dict[str, Task[Any, Any]]] = weakref.WeakKeyDictionary()


def internal_tasks(app: App) -> dict[str, Task[Any, Any]]:
    """The tasks offload runs for its own workflows (the chord join), bound to ``app``."""
    tasks = _INTERNAL.get(app)
    if tasks is None:
        join = _join_for(app)
        spec = TaskSpec(
            name=JOIN_TASK, fn=join, executor="async", binder=Binder(join), max_attempts=5
        )
        tasks = _INTERNAL[app] = {JOIN_TASK: Task(app, spec, {"result_ttl": 3600.0})}
    return tasks


def _join_for(app: App) -> Any:
    async def chord_join(
        chord_id: str, size: int, rest: list[Any], failed: bool, member: str
    ) -> str:
        """Start the stage after a chord once every member has succeeded."""
        chord = _Chord(await app.broker(), chord_id, size, _ttl(app))
        mark = await chord.mark()
        if isinstance(mark, str):
            return mark  # an earlier join already settled the chord
        verdict = "dead" if failed else await chord.scan(mark)
        if verdict == "waiting":
            return verdict
        stages = msgspec.convert(rest, list[Signature])
        if verdict == "done":
            requests = stage_requests(app, stages, (await chord.results(),))
            await _enqueue_unbounded(chord.broker, requests)
        elif verdict == "dead" and "on_failure" in stages[0].options:
            errback = msgspec.convert(stages[0].options["on_failure"], Signature)
            requests = _callbacks(app, [errback], f"{chord_id}.err", member)
            await _enqueue_unbounded(chord.broker, requests)
        await chord.settle(verdict)
        return verdict

    return chord_join


class _Chord:
    """A chord's members as its joins see them, and its progress marker in the kv store:
    a watermark (members below it have succeeded) or the verdict once settled."""

    def __init__(self, broker: Broker, chord_id: str, size: int, ttl: float) -> None:
        self.broker = broker
        self.id = chord_id
        self.size = size
        self.ttl = ttl
        self.key = f"offload:chord:{chord_id}"

    async def mark(self) -> int | str:
        raw = await self.broker.kv_get(self.key)
        if raw is None:
            return 0
        return int(raw) if raw.isdigit() else raw.decode()

    async def scan(self, start: int) -> str:
        """``done``, ``waiting``, ``dead`` or ``cancelled``, reading members in growing
        chunks from ``start`` and stopping at the first unfinished one."""
        i, chunk = start, 16
        while i < self.size:
            for rec in await self.broker.get_jobs(self._ids(i, i + chunk)):
                if rec is None or not rec.state.is_final:
                    if i > start:
                        await self.broker.kv_set(self.key, str(i).encode(), ttl_s=self.ttl)
                    return "waiting"
                if rec.state is not JobState.SUCCEEDED:
                    return "dead" if rec.state is JobState.DEAD else "cancelled"
                i += 1
            chunk = min(chunk * 2, 512)
        return "done"

    async def results(self) -> list[Any]:
        out: list[Any] = []
        for i in range(0, self.size, 500):
            ids = self._ids(i, i + 500)
            for job_id, rec in zip(ids, await self.broker.get_jobs(ids), strict=True):
                if rec is None:
                    raise JobNotFound(job_id)  # pruned: its result outlived its TTL
                value = rec.result
                out.append(None if value is None else codec_for_payload(rec.payload).decode(value))
        return out

    async def settle(self, verdict: str) -> None:
        await self.broker.kv_set(self.key, verdict.encode(), ttl_s=self.ttl)

    def _ids(self, start: int, stop: int) -> list[str]:
        return [f"{self.id}.{j}" for j in range(start, min(self.size, stop))]


async def _enqueue_unbounded(broker: Broker, requests: list[EnqueueRequest]) -> None:
    for req in requests:
        req.max_depth = None  # a workflow's next step is never refused by a queue bound
    await broker.enqueue(requests)


# --------------------------------------------------------------------------- handles


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


def _plan(stages: Sequence[Signature]) -> list[StagePlan]:
    return [
        StagePlan(kind="group", tasks=[m.name for m in _members(s)])
        if s.name == GROUP_STAGE
        else StagePlan(kind="task", tasks=[s.name])
        for s in stages
    ]


def _plan_key(wf_id: str) -> str:
    return f"offload:workflow:{wf_id}"


def _ttl(app: App) -> float:
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
        raw = await (await self._app.broker()).kv_get(_plan_key(self.id))
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
    from offload.message.envelope import Envelope

    env = Envelope(
        id=job_id,
        name="offload.cancelled",
        queue=app.default_queue,
        eta=app.clock.now() + 10 * 365 * DAY,
    )
    req = app.request_for(env, bounded=False, result_ttl=_ttl(app))
    return req
