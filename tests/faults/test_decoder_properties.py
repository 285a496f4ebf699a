"""Hostile payloads, property-based: the decoder and the worker's first steps never crash.

Two properties (RELIABILITY.md G10, DESIGN.md "a poison message ... never crashes a
worker"):

* :func:`offload.message.decode_envelope` returns an :class:`Envelope` or raises
  :class:`DecodeError`, and nothing else, for arbitrary bytes, arbitrary JSON and msgpack
  values, envelope-shaped objects with wrong fields, and truncations and bit flips of
  valid envelopes.
* The worker's whole path on such a payload (decode -> resolve -> bind -> execute ->
  follow-ups, through the real :class:`~offload.worker.runner.Runner` of an app's worker
  on a memory broker) always ends in a settlement the broker accepts, and a payload that
  cannot run is buried with its reason; :meth:`Runner.run` never raises.

``OFFLOAD_FAULTS_LONG=1`` runs many more examples.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from offload import App, JobState
from offload.brokers.base import Bury, EnqueueRequest, group_queue
from offload.errors import DecodeError
from offload.message import Envelope, decode_envelope, encode_envelope, get_codec
from offload.message.envelope import MAX_NAME_LENGTH, Signature
from tests.faults.harness import LONG

EXAMPLES = 2000 if LONG else 150
pytestmark = pytest.mark.timeout(1800 if LONG else 120)
CHEAP = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ strategies

FIELDS = list(Envelope.__struct_fields__)
TASKS = ["faults.add", "faults.sync_add", "faults.greet", "faults.anything", "faults.typed"]
TOPIC, GROUP = "faults.topic", "g"

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
#: Values both codecs carry unchanged (64-bit integers, finite floats): valid arguments.
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
msgpack_values = st.recursive(
    scalars | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.integers(-5, 5) | st.booleans(), inner)
    ),
    max_leaves=20,
)
names = st.sampled_from(TASKS) | st.text(max_size=MAX_NAME_LENGTH + 5)
signatures = st.builds(
    dict,
    name=names,
    args=st.lists(json_values, max_size=3) | json_values,
    kwargs=st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
    options=st.dictionaries(
        st.sampled_from(["priority", "max_attempts", "queue", "countdown", "eta", "key", "x"]),
        json_values,
        max_size=3,
    )
    | json_values,
)


def _shaped(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Objects shaped like an envelope: the right field names, each with any value (or a
    value of about the right kind), so validation runs past the first field."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "v": st.just(1) | values,
        "id": st.text(min_size=1, max_size=20) | values,
        "kind": st.sampled_from(["job", "event"]) | values,
        "name": names | values,
        "args": st.lists(values, max_size=4) | values,
        "kwargs": st.dictionaries(st.text(max_size=8), values, max_size=4) | values,
        "timeout_s": st.none() | st.floats() | values,
        "headers": st.dictionaries(st.text(max_size=8), st.text(max_size=8)) | values,
        "chain": st.lists(signatures, max_size=2) | values,
        "on_success": st.lists(signatures, max_size=2) | values,
        "on_failure": st.lists(signatures, max_size=2) | values,
        "chord": st.none() | st.text(max_size=8) | values,
        "chord_size": st.integers(-2, 3) | values,
    }
    optional = {f: plausible.get(f, values) for f in FIELDS if f not in ("id", "name")}
    return st.fixed_dictionaries(
        {"id": plausible["id"], "name": plausible["name"]}, optional=optional
    )


envelopes = st.builds(
    Envelope,
    id=st.text(min_size=1, max_size=40),
    name=st.sampled_from(TASKS) | st.text(min_size=1, max_size=MAX_NAME_LENGTH),
    queue=st.text(max_size=20),
    args=st.lists(plain_values, max_size=4),
    kwargs=st.dictionaries(st.text(max_size=10), plain_values, max_size=4),
    priority=st.integers(-(2**31), 2**31),
    eta=st.none() | st.floats(0, 4e9),
    timeout_s=st.none() | st.floats(0.001, 60),
    max_attempts=st.integers(1, 10),
    headers=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
)
codecs = st.sampled_from(["json", "msgpack"])


@st.composite
def valid_payloads(draw: st.DrawFn) -> bytes:
    env = draw(envelopes)
    return encode_envelope(env, get_codec(draw(codecs)), None)


@st.composite
def damaged_payloads(draw: st.DrawFn) -> bytes:
    """A valid envelope cut short, or with bits flipped, or both."""
    data = bytearray(draw(valid_payloads()))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def _encode_json(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, OverflowError, ValueError):  # ints past 64 bits
        return b'{"id": 1}'


def _encode_msgpack(value: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except (TypeError, OverflowError, ValueError):
        return b"\x80"


def _nested(depth: int, opener: bytes, closer: bytes) -> bytes:
    head = b'{"id": "a", "name": "faults.anything", "args": ['
    return head + opener * depth + closer * depth + b"]}"


payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"{" + b),
    st.tuples(st.integers(0x80, 0x8F) | st.sampled_from([0xDE, 0xDF]), st.binary(max_size=300)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    json_values.map(_encode_json),
    msgpack_values.map(_encode_msgpack),
    _shaped(json_values).map(_encode_json),
    _shaped(msgpack_values).map(_encode_msgpack),
    valid_payloads(),
    damaged_payloads(),
    st.integers(1, 3000).map(lambda n: _nested(n, b"[", b"]")),
)

#: Payloads found by hand or by earlier runs, kept so they are always tried.
KNOWN = [
    b"",
    b" ",
    b"{",
    b"\x80",
    b"\xdf\xff\xff\xff\xff",
    b'{"id": "a", "name": "x", "eta": 1e400}',
    b'{"id": "a", "name": "x", "priority": 123456789012345678901234567890}',
    b'{"id": "a", "name": "faults.anything", "args": ["\\u0000"]}',
    b'{"id": "a", "name": "x\\u0000y"}',
    b'{"id": "a", "name": "' + b"n" * (MAX_NAME_LENGTH + 1) + b'"}',
    _nested(100_000, b"[", b"]"),
    b'{"id": "a", "name": "x", "args": ' + b"[" * 100_000,
    b"\x82\xa2id\xa1a\xa4name\xa1x" + b"\x91" * 100_000,
]


def _check_decoded(payload: bytes) -> Envelope | None:
    """The property: an Envelope (that keeps the decoder's promises) or DecodeError."""
    try:
        env = decode_envelope(payload)
    except DecodeError:
        return None
    assert isinstance(env, Envelope)
    assert env.v == 1
    assert isinstance(env.name, str) and 1 <= len(env.name) <= MAX_NAME_LENGTH
    assert isinstance(env.id, str)
    assert env.kind in ("job", "event")
    assert isinstance(env.args, list) and isinstance(env.kwargs, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.headers.items())
    assert all(isinstance(s, Signature) for s in (*env.chain, *env.on_success, *env.on_failure))
    return env


# ------------------------------------------------------------------ the decoder


@pytest.mark.parametrize("payload", KNOWN, ids=range(len(KNOWN)))
def test_known_hostile_payloads_decode_or_raise_decode_error(payload: bytes) -> None:
    _check_decoded(payload)


@CHEAP
@given(payloads)
def test_decoder_returns_an_envelope_or_raises_decode_error(payload: bytes) -> None:
    _check_decoded(payload)


@CHEAP
@given(envelopes, codecs)
def test_every_valid_envelope_round_trips(env: Envelope, codec: str) -> None:
    assert decode_envelope(encode_envelope(env, get_codec(codec), None)) == env


# ------------------------------------------------------------------ the worker's path


def _make_app() -> App:
    app = App(f"memory://faults-{uuid.uuid4().hex[:8]}")

    @app.task(name="faults.add", queue="f")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="faults.sync_add", queue="f")
    def sync_add(a: int, b: int = 0) -> int:
        return a + b

    @app.task(name="faults.greet", queue="f", retries=2)
    async def greet(name: str, *, times: int = 1) -> str:
        return name * max(0, min(times, 3))

    @app.task(name="faults.anything", queue="f")
    async def anything(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    @app.task(name="faults.typed", queue="f")
    async def typed(when: float, tags: list[str], limits: dict[str, int]) -> None:
        return None

    @app.on(TOPIC, group=GROUP)
    async def on_event(event: dict[str, int]) -> None:
        return None

    return app


@contextmanager
def _worker_loop() -> Iterator[tuple[asyncio.Runner, Any, App]]:
    """One event loop, app and (unstarted) worker shared by every example of a test."""
    app = _make_app()
    with asyncio.Runner() as loop:
        worker = loop.run(app.worker(queues=("f", group_queue(TOPIC, GROUP))))
        try:
            yield loop, worker, app
        finally:
            worker._threads.close()
            loop.run(app.close())


async def _run_through(worker: Any, payload: bytes, kind: str) -> None:
    """Enqueue ``payload`` raw, claim it, run it, settle it: the worker's path, step by step."""
    broker = worker.broker
    queue = "f" if kind == "job" else group_queue(TOPIC, GROUP)
    job_id = uuid.uuid4().hex
    req = EnqueueRequest(
        id=job_id,
        queue=queue,
        name="?",
        kind=kind,  # type: ignore[arg-type]
        payload=payload,
        enqueued_at=worker.clock.now(),
        max_attempts=2,
    )
    for q in await broker.queues():  # follow-ups of earlier examples: not this test's job
        await broker.purge(q)
    assert (await broker.enqueue([req]))[0].status == "queued"
    [d] = await broker.claim([queue], worker.id, 1, 30.0)
    settlement = await worker.runner.run(d)  # must not raise, whatever the payload
    assert settlement is not None, "a held lease ended without a settlement"
    assert settlement.delivery is d
    assert await broker.settle([settlement]) == [True]
    rec = await broker.get_job(job_id)
    assert rec is not None and rec.state is not JobState.RUNNING
    if isinstance(settlement, Bury):
        assert rec.state is JobState.DEAD
        assert rec.errors and rec.errors[-1].reason, "a dead job must say why"
    if _check_decoded(payload) is None:
        assert isinstance(settlement, Bury) and settlement.error.reason == "decode_error"


def test_known_hostile_payloads_end_in_a_settlement() -> None:
    with _worker_loop() as (loop, worker, _app):
        for payload in KNOWN:
            for kind in ("job", "event"):
                loop.run(_run_through(worker, payload, kind))


def test_the_worker_path_always_settles() -> None:
    with _worker_loop() as (loop, worker, _app):

        @CHEAP
        @given(payloads, st.sampled_from(["job", "job", "event"]))
        @example(b'{"id": "a", "name": "faults.add", "args": [1, 2], "timeout_s": 0}', "job")
        @example(
            b'{"id": "a", "name": "faults.greet", "args": ["x"], "kwargs": {"times": 1e300}}', "job"
        )
        def check(payload: bytes, kind: str) -> None:
            loop.run(_run_through(worker, payload, kind))

        check()


@st.composite
def runnable_envelopes(draw: st.DrawFn) -> bytes:
    """Envelopes that name a registered task, with any arguments, limits and workflow
    fields: what gets past decode and resolve, so bind, execute and follow-ups run."""
    env = {
        "id": draw(st.text(min_size=1, max_size=20)),
        "name": draw(st.sampled_from(TASKS)),
        "args": draw(st.lists(json_values, max_size=3)),
        "kwargs": draw(
            st.dictionaries(
                st.sampled_from(["a", "b", "name", "times", "x"]), json_values, max_size=3
            )
        ),
        "timeout_s": draw(st.none() | st.floats(allow_nan=False)),
        "chain": draw(st.lists(signatures, max_size=2)),
        "on_success": draw(st.lists(signatures, max_size=2)),
        "on_failure": draw(st.lists(signatures, max_size=2)),
        "chord": draw(st.none() | st.text(min_size=1, max_size=8)),
        "chord_size": draw(st.integers(-2, 3)),
    }
    encode = _encode_json if draw(st.booleans()) else _encode_msgpack
    return encode(env)


def test_registered_tasks_with_hostile_arguments_always_settle() -> None:
    with _worker_loop() as (loop, worker, _app):

        @CHEAP
        @given(runnable_envelopes())
        def check(payload: bytes) -> None:
            loop.run(_run_through(worker, payload, "job"))

        check()


def test_nan_and_infinite_time_limits_settle() -> None:
    with _worker_loop() as (loop, worker, _app):
        for limit in (math.nan, math.inf, -math.inf, -1.0, 0.0):
            for name in ("faults.add", "faults.sync_add"):
                env = {"id": "a", "name": name, "args": [1, 2], "timeout_s": limit}
                loop.run(_run_through(worker, msgspec.msgpack.encode(env), "job"))
