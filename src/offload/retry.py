"""Retry policies: when a failed attempt runs again.

The default is exponential backoff with "equal jitter": attempt *n* waits a random time
between half and all of ``min(max_delay, base * factor ** (n - 1))``. Jitter spreads the
retries of many jobs that failed together (a dependency went down) so they do not hit it
again in one burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "constant", "exponential"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before each retry.

    Attributes:
        base: delay before the first retry, in seconds.
        factor: each further retry waits ``factor`` times longer.
        max_delay: the delay never exceeds this.
        jitter: randomise each delay within ``[delay / 2, delay]``.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError("RetryPolicy needs base >= 0, factor >= 1 and max_delay >= 0")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = min(self.max_delay, self.base * self.factor ** max(0, attempt - 1))
        if not self.jitter or raw == 0:
            return raw
        return (rng or _rng).uniform(raw / 2, raw)


_rng = random.Random()


def exponential(
    base: float = 1.0, factor: float = 2.0, max_delay: float = 600.0, jitter: bool = True
) -> RetryPolicy:
    """Exponential backoff (the default): ``base``, ``base*factor``, ... up to ``max_delay``."""
    return RetryPolicy(base, factor, max_delay, jitter)


def constant(delay: float, jitter: bool = False) -> RetryPolicy:
    """The same delay before every retry."""
    return RetryPolicy(delay, 1.0, delay, jitter)
