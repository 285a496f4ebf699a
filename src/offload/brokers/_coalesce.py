"""Group commit for concurrent callers: many calls, one batch.

Web requests enqueue one job each, concurrently. Written one by one, each enqueue pays a
whole transaction (on SQLite with ``synchronous=FULL``, an fsync of a few milliseconds),
so a few hundred requests a second queue up behind the disk. A :class:`Coalescer` lets
every call that arrives while a batch is being written join the next batch: one
transaction, one fsync, each caller still getting exactly its own outcomes. Under no load
a call is written at once, alone.

The batch is written by a task of its own, never by a caller's task, so a caller that is
cancelled cannot strand the others (its items are written anyway, as they would have been
had it awaited: the transaction was already under way or about to be).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["Coalescer"]

I = TypeVar("I")  # noqa: E741 - an item
O = TypeVar("O")  # noqa: E741 - its outcome


class Coalescer(Generic[I, O]):
    """Writes the items of concurrent calls in combined batches (per event loop)."""

    def __init__(
        self, write: Callable[[list[I]], Awaitable[list[O]]], max_batch: int = 5000
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queues: dict[asyncio.AbstractEventLoop, _LoopQueue[I, O]] = {}

    async def submit(self, items: Sequence[I]) -> list[O]:
        """Write ``items`` (in a batch with other callers'); return their outcomes, in order."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue(self._write, self._max_batch)
        return await queue.submit(list(items))


class _LoopQueue(Generic[I, O]):
    def __init__(self, write: Callable[[list[I]], Awaitable[list[O]]], max_batch: int) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[list[I], asyncio.Future[list[O]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, items: list[I]) -> list[O]:
        fut: asyncio.Future[list[O]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._take()
            items = [item for part, _ in batch for item in part]
            try:
                outcomes = await self._write(items)
            except BaseException as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            start = 0
            for part, fut in batch:
                if not fut.done():
                    fut.set_result(outcomes[start : start + len(part)])
                start += len(part)

    def _take(self) -> list[tuple[list[I], asyncio.Future[list[O]]]]:
        """The waiting calls, in arrival order, up to about ``max_batch`` items."""
        taken: list[tuple[list[I], asyncio.Future[list[O]]]] = []
        size = 0
        while self._waiting and (not taken or size + len(self._waiting[0][0]) <= self._max_batch):
            call = self._waiting.pop(0)
            taken.append(call)
            size += len(call[0])
        return taken
