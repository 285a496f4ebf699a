"""What the conformance suite cannot say about the Redis broker: URLs and errors, a server
killed and restarted, blocking instead of polling, the Cluster key layout, memory bounds.

Tests that need a server of their own start a private ``redis-server`` on a free port
(never touching the shared one's data); the rest use the shared server under a private
prefix, like the conformance suite.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

from offload.brokers import open_broker
from offload.brokers.base import Ack, EnqueueRequest, EventRequest, GroupSpec, JobState, TopicSpec
from offload.brokers.redis import RedisBroker
from offload.clock import FakeClock
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError
from tests.backends import REDIS_URL, redis_check, redis_cleanup, redis_url, unavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own: durable (AOF, fsync always), killable."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen([*cmd, *self.extra], stdout=subprocess.DEVNULL)
        client = aioredis.Redis(port=self.port)
        try:
            for _ in range(200):
                try:
                    if await client.ping():
                        return
                except (rex.ConnectionError, rex.BusyLoadingError):
                    await asyncio.sleep(0.025)
            raise RuntimeError("private redis-server did not start")
        finally:
            await client.aclose()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    async def command_calls(self, command: str) -> int:
        client = aioredis.Redis(port=self.port)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    async def script_calls(self) -> int:
        """Script calls of either kind (FCALL on Redis >= 7, else EVALSHA)."""
        return await self.command_calls("fcall") + await self.command_calls("evalsha")


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def shared_url() -> AsyncIterator[str]:
    reason = await redis_check()
    if reason:
        unavailable(reason)
    url = redis_url(uuid.uuid4().hex[:10])
    try:
        yield url
    finally:
        await redis_cleanup(url)


def job(n: int, queue: str = "q", **fields: Any) -> EnqueueRequest:
    return EnqueueRequest(
        id=f"job-{n}",
        queue=queue,
        name="t",
        payload=f"p{n}".encode(),
        enqueued_at=time.time(),
        **fields,
    )


# ----------------------------------------------------------------------- URLs and errors


def test_open_broker_picks_redis_for_its_schemes() -> None:
    for url in (
        "redis://localhost:6379/0",
        "rediss://localhost:6380/1",
        "redis+sentinel://h:26379/mymaster",
    ):
        assert isinstance(open_broker(url), RedisBroker)


def test_rediss_uses_tls_and_offload_keeps_its_own_parameters() -> None:
    broker = RedisBroker("rediss://localhost:6380/1?prefix=app&socket_timeout=2.5")
    pool = broker._client.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["socket_timeout"] == 2.5, "redis-py's own parameters pass"
    assert "prefix" not in pool.connection_kwargs, "offload's are taken out"
    assert broker.settings.prefix == "app" and broker.settings.block_slice_s == 1.25


async def test_a_batch_over_several_queues_keeps_its_order(shared_url: str) -> None:
    broker = RedisBroker(shared_url)
    reqs = [job(1, queue="a"), job(2, queue="x@t"), job(3, queue="a", dedupe_key="d")]
    reqs += [job(4, queue="y@t"), job(5, queue="a", dedupe_key="d")]
    outs = await broker.enqueue(reqs)
    assert [(o.status, o.job_id) for o in outs] == [
        ("queued", "job-1"),
        ("queued", "job-2"),
        ("queued", "job-3"),
        ("queued", "job-4"),
        ("duplicate", "job-3"),
    ]
    assert {"a", "x@t", "y@t"} <= set(await broker.queues())
    await broker.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://localhost:6379/zero", "database number"),
        ("redis://localhost:6379/0?prefix=a{b}", "braces"),
        ("redis://localhost:6379/0?prefix=", "prefix"),
        ("redis+sentinel://:pw@h1:26379/", "service_name"),
        ("redis+sentinel://h1:port/mymaster", "Sentinel address"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        RedisBroker(url)


async def test_unreachable_server_raises_broker_unavailable_quickly() -> None:
    port = free_port()  # nothing listens here
    broker = RedisBroker(f"redis://:s3cret@127.0.0.1:{port}/0?prefix=x")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        await broker.enqueue([job(1)])
    assert time.monotonic() - started < 3.0
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "s3cret" not in message and ":***@" in message
    assert "running" in message, "the message says what to check"
    assert isinstance(info.value.__cause__, rex.ConnectionError)
    with pytest.raises(BrokerUnavailable):
        await broker.open()
    with pytest.raises(BrokerUnavailable):
        await broker.claim(["q"], "w", 10, 30, wait_s=0.1)
    await broker.close()


async def test_a_foreign_key_under_the_prefix_is_reported_not_retried(shared_url: str) -> None:
    broker = RedisBroker(shared_url)
    prefix = shared_url.rpartition("prefix=")[2]
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.set(f"{prefix}:queues", "somebody else's string")
        with pytest.raises(BrokerError) as info:
            await broker.enqueue([job(1)])
    finally:
        await client.aclose()
        await broker.close()
    assert not isinstance(info.value, BrokerUnavailable)
    assert "own prefix" in str(info.value) and prefix in str(info.value)


async def test_open_warns_when_the_server_may_lose_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    durable = PrivateRedis(tmp_path / "durable")
    lossy = PrivateRedis(
        tmp_path / "lossy", "--appendonly", "no", "--maxmemory-policy", "allkeys-lru"
    )
    for server in (durable, lossy):
        server.workdir.mkdir()
        await server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="offload.brokers.redis"):
            for server in (durable, lossy):
                broker = RedisBroker(server.url)
                await broker.open()
                await broker.close()
    finally:
        durable.stop()
        lossy.stop()
    warned = [r.getMessage() for r in caplog.records]
    assert all(f":{lossy.port}/" in m for m in warned), "nothing to say about the durable one"
    assert any("appendonly yes" in m for m in warned)
    assert any("maxmemory-policy noeviction" in m for m in warned)


# ----------------------------------------------------------------------- crash and restart


async def test_a_killed_server_comes_back_with_every_acknowledged_job(
    private_redis: PrivateRedis,
) -> None:
    broker = RedisBroker(private_redis.url + "?prefix=crash")
    await broker.open()
    outs = await broker.enqueue([job(i) for i in range(50)])
    assert {o.status for o in outs} == {"queued"}
    first = await broker.claim(["q"], "w", 10, 30)
    assert await broker.settle([Ack(d, b"done") for d in first]) == [True] * 10

    private_redis.kill()
    with pytest.raises(BrokerUnavailable):
        await broker.claim(["q"], "w", 10, 30)
    await private_redis.start()  # same port, same directory: replays the AOF

    # The same broker object works again without being reopened.
    rest = await broker.claim(["q"], "w", 100, 30)
    assert sorted(d.job_id for d in rest) == sorted(f"job-{i}" for i in range(50) if i >= 10)
    done = await broker.get_jobs([d.job_id for d in first])
    assert all(
        r is not None and r.state is JobState.SUCCEEDED and r.result == b"done" for r in done
    )
    # The restart dropped the scripts: a pipelined settle (its follow-up registers a new
    # queue) meets NOSCRIPT and loads them again.
    assert await broker.settle([Ack(rest[0], b"ok", follow_ups=[job(99, queue="next")])]) == [True]
    assert "next" in await broker.queues()
    await broker.close()


async def test_a_server_killed_under_a_blocked_claim_raises_instead_of_hanging(
    private_redis: PrivateRedis,
) -> None:
    broker = RedisBroker(private_redis.url + "?prefix=blocked")
    await broker.open()
    waiter = asyncio.create_task(broker.claim(["q"], "w", 10, 30, wait_s=4.0))
    await asyncio.sleep(0.3)
    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await waiter
    assert time.monotonic() - started < 2.0
    await broker.close()


# ----------------------------------------------------------------------- wake-ups, not polling


async def test_a_claim_cancelled_while_blocked_leaves_the_broker_healthy(
    private_redis: PrivateRedis,
) -> None:
    broker = RedisBroker(private_redis.url + "?prefix=cancel")
    await broker.open()
    waiter = asyncio.create_task(broker.claim(["q"], "w", 10, 30, wait_s=4.0))
    await asyncio.sleep(0.3)  # now inside BLPOP
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await broker.enqueue([job(1)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    [d] = await broker.claim(["q"], "w", 10, 30, wait_s=4.0)
    assert d.job_id == "job-1" and loop.time() - started < 0.5
    await broker.close()


async def test_an_idle_claim_blocks_instead_of_polling(private_redis: PrivateRedis) -> None:
    broker = RedisBroker(private_redis.url + "?prefix=idle")
    await broker.open()
    before = await private_redis.script_calls()
    assert await broker.claim(["a", "b"], "w", 10, 30, wait_s=1.0) == []
    calls = await private_redis.script_calls() - before
    assert calls <= 4, f"an idle claim of 1 s ran {calls} claim scripts: it polls"
    assert await private_redis.command_calls("blpop") >= 1
    await broker.close()


@pytest.mark.parametrize("queue", ["plain", "émails@orders.placed", "x{y}z"])
async def test_a_blocked_claim_wakes_at_once_on_enqueue(
    private_redis: PrivateRedis, queue: str
) -> None:
    """Also proves the wake key Python blocks on is the one the Lua script pushes to."""
    broker = RedisBroker(private_redis.url + "?prefix=wake")
    await broker.open()
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(broker.claim([queue], "w", 10, 30, wait_s=4.0))
    await asyncio.sleep(0.2)
    enqueued_at = loop.time()
    await broker.enqueue([job(1, queue=queue)])
    got = await waiter
    assert [d.job_id for d in got] == ["job-1"]
    assert loop.time() - enqueued_at < 0.5
    await broker.close()


async def test_wait_job_wakes_when_the_job_finishes_without_polling(
    private_redis: PrivateRedis,
) -> None:
    broker = RedisBroker(private_redis.url + "?prefix=waitjob")
    await broker.open()
    await broker.enqueue([job(1, queue="a@b")])
    [d] = await broker.claim(["a@b"], "w", 1, 30)
    loop = asyncio.get_running_loop()
    waiters = [asyncio.create_task(broker.wait_job("job-1", timeout_s=4.0)) for _ in range(3)]
    await asyncio.sleep(0.3)
    before = await private_redis.script_calls()
    acked_at = loop.time()
    assert await broker.ack(d, b"r")
    records = await asyncio.gather(*waiters)
    assert loop.time() - acked_at < 0.5, "every waiter wakes on the notice"
    assert all(r is not None and r.result == b"r" for r in records)
    assert await private_redis.script_calls() - before <= 4
    await broker.close()


# ----------------------------------------------------------------------- layout and memory


async def test_every_key_of_a_group_queue_lives_in_its_topic_slot(shared_url: str) -> None:
    clock = FakeClock()
    broker = RedisBroker(shared_url, clock=clock)
    prefix = shared_url.rpartition("prefix=")[2]
    topic = "orders.placed"
    await broker.ensure_topic(TopicSpec(name=topic), [GroupSpec(topic=topic, group="mail")])
    event = EventRequest(id="e1", payload=b"x", published_at=clock.now(), key="k")
    await broker.publish(
        topic, [event, EventRequest(id="e2", payload=b"y", published_at=clock.now(), key="k")]
    )
    [d] = await broker.claim(["mail@orders.placed"], "w", 10, 30)
    await broker.settle([Ack(d, b"ok")])
    await broker.wait_job(d.job_id, 0.01)

    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k.decode() async for k in client.scan_iter(match=f"{prefix}:*")]
    await client.aclose()
    global_keys = {f"{prefix}:queues", f"{prefix}:topics"}
    tagged = [k for k in keys if k not in global_keys and not k.startswith(f"{prefix}:id:")]
    assert len(tagged) > 8
    assert {key_slot(k.encode()) for k in tagged} == {key_slot(topic.encode())}
    await broker.close()


async def test_prune_deletes_finished_jobs_and_their_index(shared_url: str) -> None:
    clock = FakeClock()
    broker = RedisBroker(shared_url, clock=clock)
    prefix = shared_url.rpartition("prefix=")[2]
    await broker.enqueue([job(i, result_ttl_s=60) for i in range(20)])
    deliveries = await broker.claim(["q"], "w", 100, 30)
    await broker.settle([Ack(d, b"r" * 1000) for d in deliveries])

    client = aioredis.Redis.from_url(REDIS_URL)
    ttl = await client.ttl(f"{prefix}:{{q}}:j:job-3")
    assert 86_400 < ttl <= 86_400 + 60, "a safety-net EXPIRE of the TTL plus a day"
    clock.advance(61)
    assert await broker.prune() == 20
    leftover = [k.decode() async for k in client.scan_iter(match=f"{prefix}:*")]
    await client.aclose()
    assert not [k for k in leftover if ":j:" in k or ":id:" in k], leftover
    [stats] = await broker.stats(["q"])
    assert stats.counts.succeeded == 0 and stats.counters.succeeded == 20
    await broker.close()


async def test_prefixes_keep_two_applications_apart(shared_url: str) -> None:
    other_url = redis_url(uuid.uuid4().hex[:10])
    a, b = RedisBroker(shared_url), RedisBroker(other_url)
    try:
        await a.enqueue([job(1)])
        assert await b.claim(["q"], "w", 10, 30) == []
        assert await b.get_job("job-1") is None
        assert [o.status for o in await b.enqueue([job(1)])] == ["queued"]
    finally:
        await a.close()
        await b.close()
        await redis_cleanup(other_url)


# ----------------------------------------------------------------------- sentinel


async def test_a_sentinel_url_reaches_the_primary(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor primary 127.0.0.1 {private_redis.port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
    )
    try:
        broker = RedisBroker(f"redis+sentinel://127.0.0.1:{sentinel_port}/primary/0?prefix=sent")
        for _ in range(100):
            try:
                await broker.open()
                break
            except BrokerUnavailable:  # the Sentinel is still starting
                await asyncio.sleep(0.05)
        await broker.enqueue([job(1)])
        [d] = await broker.claim(["q"], "w", 10, 30)
        assert d.job_id == "job-1"
        direct = RedisBroker(private_redis.url + "?prefix=sent")
        assert (await direct.get_job("job-1")) is not None, "the job is on the primary"
        await direct.close()
        await broker.close()
    finally:
        sentinel.terminate()
        sentinel.wait()


async def test_more_concurrent_calls_than_connections_wait_their_turn() -> None:
    """redis-py 8 raises "Too many connections" past its pool size; offload's pool makes
    the extra calls wait for a free connection instead (the demo shop met this at 100)."""
    import asyncio

    import offload.brokers.redis  # noqa: F401  (registered)
    from offload.brokers import open_broker
    from tests.backends import BACKENDS, unavailable

    backend = BACKENDS["redis"]
    if reason := await backend.check():
        unavailable(reason)
    from pathlib import Path

    url = backend.make_url(Path("/tmp"), "pool") + "&max_connections=4"
    broker = open_broker(url)
    await broker.open()
    try:
        results = await asyncio.gather(*(broker.get_jobs([f"j{i}"]) for i in range(300)))
        assert results == [[None]] * 300
    finally:
        await broker.close()
        await backend.cleanup(url)


async def test_fenced_calls_do_not_wait_behind_application_traffic() -> None:
    """Claims and outcomes read the clock before they are sent, so they must not queue
    for a connection behind many result waits; they have connections of their own."""
    import asyncio
    from pathlib import Path

    from offload.brokers import open_broker
    from tests.backends import BACKENDS, unavailable
    from tests.conformance.helpers import req

    backend = BACKENDS["redis"]
    if reason := await backend.check():
        unavailable(reason)
    url = backend.make_url(Path("/tmp"), "fenced") + "&max_connections=2&pool_timeout=20"
    broker = open_broker(url)
    await broker.open()
    try:
        [job] = await broker.enqueue([req(broker)])
        waiters = [asyncio.create_task(broker.wait_job(job.job_id, 3)) for _ in range(4)]
        await asyncio.sleep(0.2)  # both application connections now block in wait_job
        loop = asyncio.get_running_loop()
        started = loop.time()
        [d] = await broker.claim(["q"], "w", 1, 30)
        assert await broker.ack(d, b"ok")
        assert loop.time() - started < 1.0, "the claim and ack did not queue for a connection"
        await asyncio.gather(*waiters)
    finally:
        await broker.close()
        await backend.cleanup(url)
