"""Wake-up hints shared by brokers: wait for "something changed" across loops and threads.

A :class:`Notifier` is a version counter plus the futures of the coroutines waiting on
it. ``notify()`` may be called from any thread; each waiter is woken in its own event
loop. Wake-ups are hints: a waiter always re-checks the store, and always has a timeout.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["Notifier"]


class Notifier:
    """Wake coroutines in any event loop when the store changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self.version = 0

    def notify(self) -> None:
        """Wake every waiter (thread-safe)."""
        with self._lock:
            self.version += 1
            waiters, self._waiters = self._waiters, set()
        for loop, fut in waiters:
            if loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # loop closed between the check and the call
                continue

    async def wait(self, within_s: float, seen_version: int | None = None) -> bool:
        """Wait up to ``within_s`` seconds for a notification after ``seen_version``.

        Returns True if woken (or the version already moved), False on timeout.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if seen_version is not None and seen_version != self.version:
                return True
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(fut, within_s)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(entry)
        return True


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
