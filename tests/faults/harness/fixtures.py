"""Pytest fixtures of the fault suite (``tests/faults/conftest.py`` imports them).

``fault_backend`` is parametrised over SQLite, Redis and PostgreSQL, each on a private
server: a fresh ``redis-server`` per test, one PostgreSQL cluster per test module with a
schema per test, a SQLite file per test. A server that cannot start here skips the test
(fails under ``OFFLOAD_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from tests.backends import unavailable
from tests.faults.harness.servers import PrivatePostgres, PrivateRedis, ServerMissing

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["FAULT_BACKENDS", "FaultBackend", "fault_backend", "postgres_cluster"]

FAULT_BACKENDS = ("sqlite", "redis", "postgres")


@dataclass
class FaultBackend:
    """A broker URL of a test's own, and the server behind it (``None`` for SQLite)."""

    name: str
    url: str
    server: PrivateRedis | PrivatePostgres | None = None


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[PrivatePostgres]:
    """One private PostgreSQL cluster for the whole test module."""
    try:
        cluster = PrivatePostgres()
    except ServerMissing as exc:
        unavailable(str(exc))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def make_redis(root: Path, **config: str | bool | None) -> PrivateRedis:
    """A started private ``redis-server`` (the caller stops it)."""
    try:
        server = PrivateRedis(root, **config)  # type: ignore[arg-type]
    except ServerMissing as exc:
        unavailable(str(exc))
    server.start()
    return server


@pytest.fixture(params=FAULT_BACKENDS)
def fault_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultBackend]:
    """Each backend on a private server (see the module docs)."""
    name = request.param
    if name == "sqlite":
        yield FaultBackend(name, f"sqlite:///{tmp_path / 'faults.db'}")
    elif name == "redis":
        server = make_redis(tmp_path / "redis")
        try:
            yield FaultBackend(name, server.url(), server)
        finally:
            server.stop()
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        if not cluster.running:
            cluster.start()  # a crash test in the module left it down
        yield FaultBackend(name, cluster.url(), cluster)
