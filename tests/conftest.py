from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from offload.brokers import Broker, open_broker
from offload.clock import FakeClock
from tests.backends import BACKENDS, backend_names, unavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def make_broker(name: str, tmp_path: Path, clock: object) -> AsyncIterator[Broker]:
    backend = BACKENDS[name]
    reason = await backend.check()
    if reason:
        unavailable(reason)
    url = backend.make_url(tmp_path, uuid.uuid4().hex[:10])
    broker = open_broker(url, clock=clock)  # type: ignore[arg-type]
    await broker.open()
    try:
        yield broker
    finally:
        await broker.close()
        await backend.cleanup(url)


@pytest.fixture(params=backend_names())
async def broker(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Broker]:
    """An open broker of each backend, driven by a fake clock."""
    async for b in make_broker(request.param, tmp_path, clock):
        yield b


@pytest.fixture
def backend_name(broker: Broker) -> str:
    return broker.capabilities.name


@pytest.fixture(params=backend_names())
async def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A broker URL of each backend, cleaned up after the test (real clock)."""
    backend = BACKENDS[request.param]
    reason = await backend.check()
    if reason:
        unavailable(reason)
    url = backend.make_url(tmp_path, uuid.uuid4().hex[:10])
    if url == "memory://":
        url = f"memory://{uuid.uuid4().hex[:8]}"
    try:
        yield url
    finally:
        await backend.cleanup(url)


@pytest.fixture
def app_url_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory: a fresh URL of the named backend, cleaned up after the test (sync tests)."""
    import asyncio

    made: list[tuple[str, str]] = []

    def make(name: str) -> str:
        backend = BACKENDS[name]
        reason = asyncio.run(backend.check())
        if reason:
            unavailable(reason)
        url = backend.make_url(tmp_path, uuid.uuid4().hex[:10])
        made.append((name, url))
        return url

    yield make
    for name, url in made:
        asyncio.run(BACKENDS[name].cleanup(url))
