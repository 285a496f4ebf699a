"""Coalesced re-reads of awaited jobs for the PostgreSQL broker.

A ``d:<queue>`` notification wakes every coroutine awaiting a job of that queue at once.
Each would re-read its own job; instead, those that ask in the same turn of the event
loop share one ``get_jobs`` query, so a web process awaiting a thousand results pays one
query per notification, not a thousand.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from offload.brokers.base import JobRecord

__all__ = ["Rereads"]


class Rereads:
    """``get(job_id)`` answered by one batched read per turn of the event loop."""

    def __init__(self, read: Callable[[Sequence[str]], Awaitable[list[JobRecord | None]]]) -> None:
        self._read = read
        self._asked: dict[str, list[asyncio.Future[JobRecord | None]]] = {}
        self._flush: asyncio.Task[None] | None = None

    async def get(self, job_id: str) -> JobRecord | None:
        """The job's record, read together with every other job asked for meanwhile."""
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(job_id, []).append(fut)
        if self._flush is None:
            self._flush = asyncio.create_task(self._run(), name="offload-pg-rereads")
        return await fut

    async def _run(self) -> None:
        await asyncio.sleep(0)  # the other waiters woken by the same notification ask now
        asked, self._asked, self._flush = self._asked, {}, None
        try:
            records = await self._read(list(asked))
        except Exception as exc:  # every waiter of this read gets the error
            _fail(asked.values(), exc)
            return
        except BaseException:  # cancelled: so are the waits
            _fail(asked.values(), None)
            raise
        for futs, record in zip(asked.values(), records, strict=True):
            for fut in futs:
                if not fut.done():
                    fut.set_result(record)


def _fail(waiters: Iterable[list[asyncio.Future[JobRecord | None]]], exc: Exception | None) -> None:
    for futs in waiters:
        for fut in futs:
            if fut.done():
                continue
            if exc is None:
                fut.cancel()
            else:
                fut.set_exception(exc)
