"""A worker running inside a test's event loop for the length of a ``with`` block."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from offload import App
    from offload.worker.worker import Worker


@asynccontextmanager
async def running_worker(
    app: App, *, stop_grace_s: float | None = None, **options: Any
) -> AsyncIterator[Worker]:
    """Run ``app.worker(**options)`` for the block; then stop it (running jobs get
    ``stop_grace_s``, or the worker's own grace) and wait for it to end."""
    worker = await app.worker(**options)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop(grace_s=stop_grace_s)
        await asyncio.wait_for(task, 30)
