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

import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec

from offload.brokers.base import JobState
from offload.errors import ConfigurationError, JobNotFound
from offload.flow.limits import admit
from offload.message.codecs import codec_for_payload
from offload.message.envelope import Signature
from offload.message.ids import new_id
from offload.specs import Binder, TaskSpec
from offload.tasks import CallOptions, Task
from offload.workflows.handles import (
    StagePlan,
    StepInfo,
    SyncWorkflowHandle,
    WorkflowHandle,
    WorkflowPlan,
    plan_key,
    ttl_for,
)

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
        wf_id = new_id()
        stages = _compile(self.stages, wf_id)
        _check_tasks(app, stages)
        plan = WorkflowPlan(id=wf_id, created_at=app.clock.now(), stages=_plan(stages))
        broker = await app.broker()
        await broker.kv_set(plan_key(wf_id), msgspec.json.encode(plan), ttl_s=ttl_for(app))
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
    """A signature's options as enqueue options (after a trip through JSON).

    Raises:
        msgspec.ValidationError: an option has the wrong type (they come from a message,
            so they are checked like arguments before anything is enqueued).
    """
    opts = dict(options)
    opts.pop("connection", None)
    for name in ("on_success", "on_failure"):
        if name in opts and not isinstance(opts[name], Signature):
            opts[name] = msgspec.convert(opts[name], Signature)
    if isinstance(opts.get("delay"), str):
        opts["delay"] = msgspec.convert(opts["delay"], timedelta)
    if isinstance(opts.get("eta"), str):
        opts["eta"] = datetime.fromisoformat(opts["eta"])
    return msgspec.convert(opts, CallOptions, strict=False)


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
        chord = _Chord(await app.broker(), chord_id, size, ttl_for(app))
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


def _plan(stages: Sequence[Signature]) -> list[StagePlan]:
    return [
        StagePlan(kind="group", tasks=[m.name for m in _members(s)])
        if s.name == GROUP_STAGE
        else StagePlan(kind="task", tasks=[s.name])
        for s in stages
    ]
