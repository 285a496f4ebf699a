"""The thin sync facade: run offload's async API from sync code.

A :class:`Portal` is one background thread with its own event loop. Sync calls submit the
async call to it and wait. There is no sync logic of its own here: every behaviour is the
async one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Portal"]

P = ParamSpec("P")
T = TypeVar("T")


class Portal:
    """A background event loop that sync code hands coroutines to."""

    def __init__(self, name: str = "offload-portal") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the portal's loop and return its result."""
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            raise RuntimeError("a sync offload call was made from inside offload's own loop")

        async def run() -> T:
            return await fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The portal's loop, if started."""
        return self._loop

    def close(self) -> None:
        """Stop the loop and its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
