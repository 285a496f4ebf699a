"""LISTEN/NOTIFY wake-ups for the PostgreSQL broker: hints, never the delivery path.

One dedicated connection per broker LISTENs on the schema's channel. The jobs triggers
notify ``q:<queue>`` when jobs become claimable and ``d:<queue>`` when jobs finish; each
notification bumps a version per payload and wakes the coroutines waiting on it, which
then re-check the database. While the connection is down (or not yet up) waiters poll
with backoff, and after it reconnects every waiter is woken once, since notifications
sent in between are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Listener"]

log = logging.getLogger(__name__)

_RECONNECT_MIN_S = 0.1
_RECONNECT_MAX_S = 5.0
_IDLE_CHECK_S = 30.0


class Listener:
    """Turns notifications on one channel into versioned wake-ups."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def listening(self) -> bool:
        """True while notifications are being received (waits may rely on them)."""
        return self._ready.is_set()

    async def start(self, wait_s: float) -> None:
        """Start listening (once); wait up to ``wait_s`` for the LISTEN to be in place."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"offload-listen-{self._channel}")
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready = asyncio.Event()  # a later start() may run in another event loop

    def versions(self, keys: Iterable[str]) -> tuple[int, ...]:
        """The current versions of ``keys`` (take them before checking the database)."""
        return tuple(self._versions.get(k, 0) for k in keys)

    async def wait(self, keys: Iterable[str], seen: tuple[int, ...], within_s: float) -> bool:
        """Wait until one of ``keys`` moves past ``seen``, at most ``within_s`` seconds.

        Returns True if woken. Cancelling the wait is always safe: nothing is consumed.
        """
        keys = list(keys)
        if self.versions(keys) != seen:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in keys:
            self._waiters.setdefault(k, set()).add(fut)
        try:
            await asyncio.wait_for(fut, within_s)
        except TimeoutError:
            return False
        finally:
            for k in keys:
                waiters = self._waiters.get(k)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[k]
        return True

    def fire(self, key: str) -> None:
        """Bump ``key`` and wake its waiters."""
        self._versions[key] = self._versions.get(key, 0) + 1
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def _fire_all(self) -> None:
        for key in list(self._versions.keys() | self._waiters.keys()):
            self.fire(key)

    async def _run(self) -> None:
        backoff = _RECONNECT_MIN_S
        while True:
            try:
                await self._listen()
            except psycopg.Error as exc:
                log.warning("offload: LISTEN connection lost (%s); polling until it is back", exc)
            else:
                backoff = _RECONNECT_MIN_S
            self._ready.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RECONNECT_MAX_S)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            await conn.execute(f'LISTEN "{self._channel}"'.encode())
            self._ready.set()
            self._fire_all()
            while True:
                async for note in conn.notifies(timeout=_IDLE_CHECK_S):
                    self.fire(note.payload)
                # A quiet spell: prove the connection is alive, or fail and reconnect.
                await conn.execute(b"SELECT 1")
