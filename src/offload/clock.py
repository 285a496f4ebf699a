"""The only module that reads time.

Everything in offload takes a :class:`Clock`; tests pass a :class:`FakeClock` and move it
forward instead of sleeping. ``now()`` is wall-clock Unix time in seconds (what is stored
and compared across machines: ETAs, leases, timestamps); ``monotonic()`` is for measuring
intervals inside one process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "system_clock"]


class Clock(Protocol):
    """A source of time."""

    def now(self) -> float:
        """Wall-clock Unix time in seconds."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


system_clock = SystemClock()


class FakeClock:
    """A clock that moves only when told to, for tests.

    ``sleep`` advances the clock by the requested time and yields to the event loop once,
    so code that sleeps in a loop runs at full speed while seeing time pass.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
