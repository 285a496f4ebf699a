"""The demo, started in this process with real servers on free ports."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from offload.demo.runner import Demo, DemoOptions, running

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def options(tmp_path: Path, broker: str | None = None, **kw: Any) -> DemoOptions:
    return DemoOptions(broker=broker, dir=tmp_path / "demo", port=0, smtp_port=0, **kw)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """The demo on its default broker (SQLite in its directory)."""
    async with running(options(tmp_path)) as d:
        yield d


@pytest.fixture
async def shop(demo: Demo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=demo.shop_url, timeout=30) as client:
        yield client


async def wait_for(check: Any, timeout: float = 60.0, what: str = "the condition") -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
