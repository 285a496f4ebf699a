"""The backends every conformance test runs against, and how to reach each.

A backend whose server is missing is skipped locally with the reason, and fails when
``OFFLOAD_REQUIRE_SERVICES=1`` (as CI sets it): a backend test must never turn green by
not running.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

RUN_ID = uuid.uuid4().hex[:10]
REDIS_URL = os.environ.get("OFFLOAD_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("OFFLOAD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    return os.environ.get("OFFLOAD_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip (on a laptop) or fail (in CI) a test whose service cannot be reached."""
    if services_required():
        pytest.fail(f"{reason}; OFFLOAD_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Backend:
    name: str
    make_url: Callable[[Path, str], str]
    check: Callable[[], Awaitable[str | None]]
    cleanup: Callable[[str], Awaitable[None]]


async def _always() -> str | None:
    return None


async def _nothing(url: str) -> None:
    return None


BACKENDS: dict[str, Backend] = {
    "memory": Backend("memory", lambda tmp, uid: "memory://", _always, _nothing),
    "sqlite": Backend(
        "sqlite", lambda tmp, uid: f"sqlite:///{tmp / f'offload-{uid}.db'}", _always, _nothing
    ),
}


#: Variants of a backend that only the conformance suite runs (tests/conformance/conftest.py).
CONFORMANCE_ONLY: list[str] = []


def backend_names(*, shared_only: bool = False) -> list[str]:
    """Backends to parametrise over (``shared_only``: those several processes can share)."""
    names = [name for name in BACKENDS if name not in CONFORMANCE_ONLY]
    if shared_only:
        names.remove("memory")
    return names


# ------------------------------------------------------------------------- redis


def redis_url(uid: str) -> str:
    """A URL whose key prefix is private to this run and this test."""
    return f"{REDIS_URL.partition('?')[0]}?prefix=offload-test:{RUN_ID}:{uid}"


async def redis_check() -> str | None:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return (
            f"Redis at {REDIS_URL} did not answer PING ({exc}); "
            "start redis-server or set OFFLOAD_TEST_REDIS"
        )
    finally:
        await client.aclose()
    return None


async def redis_cleanup(url: str) -> None:
    """Delete every key under the test's prefix (SCAN, never FLUSHDB: the server is shared)."""
    import redis.asyncio as aioredis

    prefix = url.rpartition("prefix=")[2]
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        batch = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


BACKENDS["redis"] = Backend("redis", lambda tmp, uid: redis_url(uid), redis_check, redis_cleanup)
# The EVALSHA path (what Redis 6.2 gets) on the same server: Redis >= 7 runs the Functions
# library by default, so the conformance suite runs this one too.
BACKENDS["redis-eval"] = Backend(
    "redis-eval", lambda tmp, uid: redis_url(uid) + "&scripts=eval", redis_check, redis_cleanup
)
CONFORMANCE_ONLY.append("redis-eval")


# ------------------------------------------------------------------------- postgres


def postgres_url(uid: str) -> str:
    """A URL whose schema is private to this run and this test."""
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}schema=offload_t_{RUN_ID}_{uid}"


_postgres_reason: list[str | None] = []  # the check's answer, asked once per process


async def postgres_check() -> str | None:
    """Why the PostgreSQL server cannot be used here (None: it accepts a connection)."""
    if not _postgres_reason:
        import psycopg

        from offload.brokers._pg_conn import parse_url
        from offload.brokers.base import redact_url

        try:
            conninfo = parse_url(POSTGRES_URL).conninfo
            async with await psycopg.AsyncConnection.connect(conninfo, connect_timeout=3):
                pass
        except psycopg.Error as exc:
            _postgres_reason.append(
                f"PostgreSQL at {redact_url(POSTGRES_URL)} refused a connection ({exc}); "
                "start it or set OFFLOAD_TEST_POSTGRES"
            )
        else:
            _postgres_reason.append(None)
    return _postgres_reason[0]


async def postgres_cleanup(url: str) -> None:
    """Drop the test's own schema (never anything else: the server is shared)."""
    import psycopg

    from offload.brokers._pg_conn import parse_url

    settings = parse_url(url)
    assert settings.schema.startswith("offload_t_"), settings.schema
    async with await psycopg.AsyncConnection.connect(settings.conninfo, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.schema}" CASCADE'.encode())


BACKENDS["postgres"] = Backend(
    "postgres", lambda tmp, uid: postgres_url(uid), postgres_check, postgres_cleanup
)
