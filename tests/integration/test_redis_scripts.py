"""How the Redis broker runs its scripts: one Redis Functions library on Redis >= 7.0
(FCALL), EVALSHA on Redis 6.2, for a user who may not run FUNCTION, or with
``?scripts=eval``. Both ways pass the conformance suite (``redis`` and ``redis-eval``);
these tests pin the choice, the fallbacks and the reloading of lost scripts.

Each test has a redis-server of its own (FUNCTION FLUSH must not touch the shared one).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

import offload.brokers._redis_support as support
from offload.brokers.base import Ack
from offload.brokers.redis import RedisBroker
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError
from tests.backends import unavailable
from tests.integration.test_redis_broker import PrivateRedis, job

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    private = PrivateRedis(tmp_path)
    await private.start()
    try:
        yield private
    finally:
        private.stop()


async def command(server: PrivateRedis, *args: Any) -> Any:
    client = aioredis.Redis(port=server.port)
    try:
        return await client.execute_command(*args)
    finally:
        await client.aclose()


async def libraries(server: PrivateRedis) -> list[str]:
    listed = await command(server, "FUNCTION", "LIST")
    return sorted(lib[b"library_name"].decode() for lib in listed)


async def round_trip(broker: RedisBroker, n: int) -> None:
    """Enqueue (one call, then a pipeline over two hash tags), claim and ack."""
    await broker.enqueue([job(n)])
    await broker.enqueue([job(n + 1), job(n + 2, queue="other")])
    got = await broker.claim(["q", "other"], "w", 10, 30)
    assert sorted(d.job_id for d in got) == [f"job-{i}" for i in (n, n + 1, n + 2)]
    assert await broker.settle([Ack(d, b"ok") for d in got]) == [True] * 3


async def test_redis_7_runs_the_scripts_as_one_functions_library(server: PrivateRedis) -> None:
    broker = RedisBroker(server.url + "?prefix=fn")
    await broker.open()
    assert broker.script_mode == "functions"
    [name] = await libraries(server)
    assert name.startswith("offload_")
    await round_trip(broker, 1)
    assert await server.command_calls("fcall") >= 4
    assert await server.command_calls("evalsha") == 0
    await broker.close()


async def test_scripts_eval_in_the_url_runs_them_by_sha(server: PrivateRedis) -> None:
    broker = RedisBroker(server.url + "?prefix=ev&scripts=eval")
    await broker.open()
    assert broker.script_mode == "eval"
    await round_trip(broker, 1)
    assert await server.command_calls("evalsha") >= 4
    assert await server.command_calls("fcall") == 0
    assert await libraries(server) == [], "nothing loaded that it does not use"
    await broker.close()


def test_a_bad_scripts_option_says_what_to_write() -> None:
    with pytest.raises(ConfigurationError, match="scripts=auto"):
        RedisBroker("redis://localhost:6379/0?scripts=lua")


@pytest.mark.parametrize(("mode", "flush"), [("auto", "FUNCTION"), ("eval", "SCRIPT")])
async def test_scripts_the_server_lost_are_loaded_again(
    server: PrivateRedis, mode: str, flush: str
) -> None:
    """A server restarted without its data, or flushed by an operator, lost the scripts:
    the next call loads them again, alone or inside a pipeline."""
    broker = RedisBroker(server.url + f"?prefix=lost&scripts={mode}")
    await broker.open()
    await round_trip(broker, 1)
    await command(server, flush, "FLUSH")
    await broker.enqueue([job(10)])  # one script call
    await command(server, flush, "FLUSH")
    outs = await broker.enqueue([job(11), job(12, queue="other")])  # a pipeline of two
    assert [o.status for o in outs] == ["queued", "queued"]
    await command(server, flush, "FLUSH")
    got = await broker.claim(["q", "other"], "w", 10, 30)
    assert sorted(d.job_id for d in got) == ["job-10", "job-11", "job-12"]
    await command(server, flush, "FLUSH")
    assert await broker.settle([Ack(d, b"ok") for d in got]) == [True] * 3
    await broker.close()


async def test_a_user_who_may_not_run_function_gets_evalsha(server: PrivateRedis) -> None:
    await command(server, "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-function")
    url = f"redis://app:pw@127.0.0.1:{server.port}/0?prefix=acl"
    broker = RedisBroker(url)
    await broker.open()
    assert broker.script_mode == "eval"
    await round_trip(broker, 1)
    await broker.close()
    insists = RedisBroker(url + "&scripts=functions")
    with pytest.raises(BrokerError, match="FUNCTION") as info:
        await insists.open()
    assert "pw@" not in str(info.value), "the password stays out of the message"
    await insists.close()


async def test_a_redis_6_2_server_gets_evalsha(
    server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = RedisBroker._info

    async def as_6_2(self: RedisBroker) -> dict[str, Any]:
        return {**await real(self), "redis_version": "6.2.14"}

    monkeypatch.setattr(RedisBroker, "_info", as_6_2)
    broker = RedisBroker(server.url + "?prefix=old")
    await broker.open()
    assert broker.script_mode == "eval"
    await round_trip(broker, 1)
    await broker.close()
    assert await libraries(server) == []
    insists = RedisBroker(server.url + "?prefix=old&scripts=functions")
    with pytest.raises(BrokerError, match=r"Redis 7\.0"):
        await insists.open()
    await insists.close()


async def test_two_offload_versions_keep_their_own_libraries(
    server: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library is named by a hash of its code: another version's scripts load beside
    it instead of replacing it under the feet of the processes that still run it."""
    current = RedisBroker(server.url + "?prefix=v")
    await current.open()
    changed = tmp_path / "pkg"
    shutil.copytree(Path(support.__file__).parent / "redis_lua", changed / "redis_lua")
    with (changed / "redis_lua" / "lib.lua").open("a") as lib:
        lib.write("-- another version\n")
    monkeypatch.setattr(support.importlib.resources, "files", lambda _package: changed)
    other = RedisBroker(server.url + "?prefix=v")
    await other.open()
    assert len(await libraries(server)) == 2
    await round_trip(current, 1)
    await round_trip(other, 10)
    await current.close()
    await other.close()


@pytest.mark.parametrize("mode", ["auto", "eval"])
async def test_over_maxmemory_both_ways_refuse_the_same_calls(
    server: PrivateRedis, mode: str
) -> None:
    """Functions are refused whole or allowed by their flags; EVAL refuses a script at
    its first write that may grow memory. Each script's flags keep the two the same."""
    broker = RedisBroker(server.url + f"?prefix=oom&scripts={mode}")
    await broker.open()
    await broker.enqueue([job(1), job(2), job(3)])
    [done] = await broker.claim(["q"], "w", 1, 30)
    assert await broker.ack(done, b"ok")
    await command(server, "CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(BrokerUnavailable, match="out of memory"):
            await broker.enqueue([job(4)])
        [record] = await broker.get_jobs(["job-1"])
        assert record is not None and record.state == "succeeded"
        assert len((await broker.list_jobs(queue="q")).jobs) == 3
        assert len(await broker.timings("q", 0.0)) == 1
        [d] = await broker.claim(["q"], "w", 1, 30)
        with pytest.raises(BrokerUnavailable, match="out of memory"):
            await broker.ack(d, b"ok")
        assert await broker.prune() == 0
    finally:
        await command(server, "CONFIG", "SET", "maxmemory", "0")
    assert await broker.ack(d, b"ok")
    await broker.close()
