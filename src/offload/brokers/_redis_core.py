"""The Redis broker's base: connection, lifecycle and how scripts are called."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex

from offload.brokers._redis_support import Boundary, Keys, Scripts, make_client, parse_url
from offload.brokers.base import BrokerBase, Capabilities
from offload.clock import Clock, system_clock
from offload.errors import BrokerError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import redis.asyncio as aioredis
    from redis.asyncio.client import Pipeline

__all__ = ["RedisCore"]

log = logging.getLogger("offload.brokers.redis")

#: Registrations in the queue and topic registries are re-sent this often (seconds), so
#: a registry lost with a server's data is rebuilt by the next enqueue.
REGISTER_EVERY_S = 60.0
#: The scripts whose clock reading fences a lease, and the pool they use.
FENCED = frozenset({"claim", "extend", "settle", "recover", "progress"})
CONTROL_POOL_SIZE = 16
MIN_SERVER = (6, 2)
FUNCTIONS_SERVER = (7, 0)

Call = tuple[str, list[str], list[Any]]


class RedisCore(BrokerBase):
    """Connection, lifecycle and script calls shared by the Redis broker's operations."""

    def __init__(self, url: str, *, clock: Clock = system_clock) -> None:
        self.url = url
        self.clock = clock
        self.capabilities = Capabilities(
            name="redis", durable=True, shared=True, push_wakeups=True, multi_machine=True
        )
        self.settings = parse_url(url)
        self._prefix = self.settings.prefix
        self._keys = Keys(self._prefix)
        self._boundary = Boundary(url, self._prefix)
        self._client, self._sentinels = make_client(self.settings)
        # Lease-fenced calls get connections of their own: they read the clock before
        # they are sent, so they must never wait behind the application's traffic (many
        # enqueues, many result waits) for a connection.
        control = replace(self.settings, max_connections=CONTROL_POOL_SIZE)
        self._control, control_sentinels = make_client(control)
        self._sentinels += control_sentinels
        self._scripts = Scripts()
        self._registered: dict[str, float] = {}
        self._opened = False
        self._turn = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Check the server (reachable, Redis >= 6.2) and load the scripts. Idempotent."""
        if self._opened:
            return
        with self._boundary:
            info = await self._info()
            version = tuple(int(x) for x in str(info.get("redis_version", "9.9")).split(".")[:2])
            if version < MIN_SERVER:
                raise BrokerError(
                    f"offload needs Redis 6.2 or newer; {self._boundary.where} runs "
                    f"{info.get('redis_version')}. Upgrade the server."
                )
            await self._load_scripts(version >= FUNCTIONS_SERVER)
        try:
            self._warn_if_not_durable(info)
        except BrokerError:
            await self.close()  # refused (strict=1): leave no connection behind
            raise
        self._opened = True

    @property
    def script_mode(self) -> str:
        """``functions`` (one Redis Functions library, FCALL) or ``eval`` (EVALSHA)."""
        return self._scripts.mode

    async def _load_scripts(self, functions_server: bool) -> None:
        """Use the Functions library where the server and the user allow it, else EVALSHA."""
        wanted = self.settings.scripts
        if wanted != "eval" and functions_server and await self._load_library():
            self._scripts.functions = True
            return
        if wanted == "functions":
            raise BrokerError(
                f"Redis at {self._boundary.where} cannot load offload's Functions library "
                "(it needs Redis 7.0 or newer and a user allowed to run FUNCTION): upgrade "
                "the server or grant FUNCTION, or drop scripts=functions from the URL."
            )
        self._scripts.functions = False
        pipe = self._client.pipeline(transaction=False)
        for name in self._scripts.eval_code:
            pipe.execute_command(*self._scripts.load(name))
        await pipe.execute()

    async def _load_library(self) -> bool:
        """Load the Functions library unless the server has it; False if it cannot."""
        scripts, client = self._scripts, self._client
        try:
            if not await client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", scripts.library):  # type: ignore[no-untyped-call]
                await client.execute_command("FUNCTION", "LOAD", "REPLACE", scripts.library_code)  # type: ignore[no-untyped-call]
        except rex.ResponseError as exc:
            if isinstance(exc, rex.NoPermissionError) or str(exc).startswith("unknown command"):
                log.info("Redis at %s: no Functions (%s); using EVALSHA", self._boundary.where, exc)
                return False
            raise
        return True

    async def _info(self) -> dict[str, Any]:
        """INFO server, persistence and memory; empty if an ACL forbids INFO."""
        try:
            replies = await self._commands(
                ("INFO", "server"), ("INFO", "persistence"), ("INFO", "memory")
            )
        except BrokerError as exc:
            if isinstance(exc.__cause__, rex.NoPermissionError):
                return {}
            raise
        return {k: v for reply in replies for k, v in reply.items()}

    def _warn_if_not_durable(self, info: dict[str, Any]) -> None:
        """Warn (or, with ``?strict=1``, refuse) when the server may lose acknowledged jobs."""
        where = self._boundary.where
        problems = []
        if not info and self.settings.strict:
            problems.append("it does not let this user run INFO, so its settings are unknown")
        if not int(info.get("aof_enabled", 1)):
            problems.append(
                "it runs without the append-only file: acknowledged jobs are lost if the "
                "server restarts. Set appendonly yes (appendfsync everysec or always)."
            )
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            problems.append(
                f"it has maxmemory-policy {policy}: under memory pressure it may evict "
                "offload's keys and lose jobs. Set maxmemory-policy noeviction."
            )
        if problems and self.settings.strict:
            raise BrokerError(
                f"Redis at {where} may lose jobs and the URL asks for strict=1: "
                + " ".join(problems)
                + " (or drop strict=1 to run with a warning)."
            )
        for problem in problems:
            log.warning("Redis at %s: %s", where, problem)

    async def close(self) -> None:
        """Close the connections. Idempotent."""
        self._opened = False
        with self._boundary:
            await self._client.aclose()
            await self._control.aclose()
            for sentinel in self._sentinels:
                await sentinel.aclose()

    # ------------------------------------------------------------------ helpers

    def _now(self) -> tuple[float, str]:
        now = self.clock.now()
        return now, repr(now)

    def _client_for(self, names: Iterable[str]) -> aioredis.Redis:
        return self._control if any(n in FENCED for n in names) else self._client

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call."""
        client = self._client_for([name])
        with self._boundary:
            return await self._call(client, name, keys, args)

    async def _call(
        self, client: aioredis.Redis, name: str, keys: list[str], args: list[Any]
    ) -> Any:
        """Run a script, loading it again if the server lost it (flushed or restarted)."""
        command = self._scripts.call(name, keys, args)
        try:
            return await client.execute_command(*command)  # type: ignore[no-untyped-call]
        except rex.ResponseError as exc:
            if not self._scripts.missing(exc):
                raise
        await client.execute_command(*self._scripts.load(name))  # type: ignore[no-untyped-call]
        return await client.execute_command(*command)  # type: ignore[no-untyped-call]

    async def _run_many(
        self, calls: list[Call], extra: Iterable[tuple[Any, ...]] = ()
    ) -> list[Any]:
        """Plain commands then script calls, in one round trip; the scripts' results.

        The commands (registry SADDs) go first: if the server refuses them (out of
        memory) it refuses the scripts' writes too, so an error never hides a stored job.
        """
        commands = list(extra)
        if len(calls) == 1 and not commands:
            return [await self._run(*calls[0])]
        client = self._client_for(name for name, _, _ in calls)
        with self._boundary:
            pipe: Pipeline = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            for name, keys, args in calls:
                pipe.execute_command(*self._scripts.call(name, keys, args))
            try:
                replies = await pipe.execute(raise_on_error=False)
            except BaseException:
                self._registered.clear()  # the registrations may not have been sent
                raise
            results = replies[len(commands) :]
            for i, (name, keys, args) in enumerate(calls):
                if self._scripts.missing(results[i]):
                    results[i] = await self._call(client, name, keys, args)
            failed = [r for r in (*replies[: len(commands)], *results) if isinstance(r, Exception)]
            if failed:
                self._registered.clear()  # a registration may be among the failures
                raise failed[0]
        return results

    def _registrations(self, registry: str, names: Iterable[str]) -> list[tuple[Any, ...]]:
        """SADD commands for registry members not (re)sent within REGISTER_EVERY_S."""
        now = time.monotonic()
        fresh = []
        for name in names:
            key = f"{registry}\0{name}"
            if now - self._registered.get(key, -REGISTER_EVERY_S) >= REGISTER_EVERY_S:
                self._registered[key] = now
                fresh.append(name)
        return [("SADD", registry, *fresh)] if fresh else []

    async def _commands(self, *commands: tuple[Any, ...], atomic: bool = False) -> list[Any]:
        """Plain commands in one round trip (MULTI/EXEC if ``atomic``); raw replies."""
        with self._boundary:
            pipe: Pipeline = self._client.pipeline(transaction=atomic)
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute()

    async def _block(self, keys: list[str], timeout_s: float, *, control: bool = False) -> bool:
        """Wait on wake-up lists (BLPOP) for at most one slice; True if woken.

        ``control``: a worker's idle claim, on the fenced calls' connections.
        """
        timeout = max(0.01, min(timeout_s, self.settings.block_slice_s))
        client = self._control if control else self._client
        with self._boundary:
            woken = await client.execute_command("BLPOP", *keys, timeout)  # type: ignore[no-untyped-call]
        return woken is not None
