"""Helpers for testing code that uses offload.

Point the app at the in-process memory broker and run the jobs your code enqueued, in your
test's own event loop::

    from offload.testing import drain, use_memory_broker

    async def test_signup_sends_a_welcome_email() -> None:
        use_memory_broker(app)
        await signup("ada@example.com")           # your code enqueues send_welcome
        report = await drain(app)
        assert report.succeeded == 1

For time-dependent behaviour (delays, retries, leases), pass a
:class:`~offload.clock.FakeClock` to ``App(clock=...)`` and move it forward.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offload.clock import FakeClock

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.app import App

__all__ = ["DrainReport", "FakeClock", "drain", "use_memory_broker"]


def use_memory_broker(app: App) -> None:
    """Point ``app`` at a fresh in-process memory broker (before it connects)."""
    import uuid

    app.use_broker(f"memory://{uuid.uuid4().hex}")


@dataclass(frozen=True)
class DrainReport:
    """What :func:`drain` ran."""

    succeeded: int
    failed: int
    retried: int


async def drain(
    app: App,
    queues: Sequence[str] | None = None,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a plain number reads best in a test
    concurrency: int = 10,
) -> DrainReport:
    """Run a worker until no job is ready and none is running, then return what it did.

    Jobs scheduled for later (a delay, a retry's backoff) are left waiting; with a
    ``FakeClock``, advance it and call ``drain`` again.

    Raises:
        TimeoutError: jobs were still running after ``timeout`` seconds.
    """
    worker = await app.worker(
        queues=tuple(queues) if queues else tuple(app.served_queues()),
        concurrency=concurrency,
        burst=True,
        poll_s=0.01,
    )
    stats = await asyncio.wait_for(worker.run(), timeout)
    return DrainReport(stats.succeeded, stats.failed, stats.retried)
