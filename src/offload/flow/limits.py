"""Bounded queues: what happens when a producer outruns the workers.

A queue declared with ``max_depth`` holds at most that many pending jobs. The broker checks
the bound atomically with the insert (so concurrent producers never overshoot) and answers
``full``; this module turns ``full`` into the queue's policy:

* ``reject``: raise :class:`~offload.errors.QueueFull` at once, carrying ``depth``,
  ``max_depth`` and ``retry_after_s``, the time the queue needs to drain a tenth of its
  bound at its measured completion rate (:mod:`offload.metrics.estimates`); an HTTP layer
  turns it into ``429``/``503`` + ``Retry-After``;
* ``block``: wait, with backoff, until there is room or ``block_timeout_s`` passes, then
  raise ``QueueFull``. Producers thereby slow to the workers' pace.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from offload.errors import QueueFull

if TYPE_CHECKING:
    from offload.brokers.base import Broker, EnqueueOutcome, EnqueueRequest

__all__ = ["QueueConfig", "WhenFull", "admit"]

WhenFull = Literal["block", "reject"]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's bound and what producers do when it is reached."""

    name: str
    max_depth: int | None = None
    when_full: WhenFull = "block"
    block_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError("max_depth must be at least 1 (or None for unbounded)")
        if self.when_full not in ("block", "reject"):
            raise ValueError("when_full must be 'block' or 'reject'")


RetryAfter = Callable[[str, int], Awaitable[float]]


async def admit(
    broker: Broker,
    requests: Sequence[EnqueueRequest],
    configs: Callable[[str], QueueConfig],
    retry_after: RetryAfter,
    block_timeout_s: float | None = None,
) -> list[EnqueueOutcome]:
    """Enqueue ``requests``, applying each queue's policy to the ones that find it full.

    One broker call when nothing is full (the bound is checked inside it, so an unbounded
    queue costs nothing extra). Blocked requests are retried with jittered backoff (5 ms
    doubling to 250 ms), so a producer resumes within a quarter second of room appearing.

    Raises:
        QueueFull: a ``reject`` queue is full, or a ``block`` queue stayed full too long;
            ``retry_after_s`` comes from ``retry_after(queue, depth)``. Requests before
            it in the batch may have been stored (see the error's ``outcomes``).
    """
    outcomes = await broker.enqueue(requests)
    for o in outcomes:
        if o.status == "full":
            return await _wait_for_room(
                broker, requests, outcomes, configs, retry_after, block_timeout_s
            )
    return outcomes


async def _wait_for_room(
    broker: Broker,
    requests: Sequence[EnqueueRequest],
    outcomes: list[EnqueueOutcome],
    configs: Callable[[str], QueueConfig],
    retry_after: RetryAfter,
    block_timeout_s: float | None,
) -> list[EnqueueOutcome]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    delay = 0.005
    while True:
        full = [i for i, o in enumerate(outcomes) if o.status == "full"]
        if not full:
            return outcomes
        first = outcomes[full[0]]
        queue = requests[full[0]].queue
        cfg = configs(queue)
        timeout = cfg.block_timeout_s if block_timeout_s is None else block_timeout_s
        left = timeout - (loop.time() - started)
        if cfg.when_full == "reject" or left <= 0:
            max_depth = cfg.max_depth or first.depth
            error = QueueFull(queue, first.depth, max_depth, await retry_after(queue, first.depth))
            error.outcomes = outcomes  # type: ignore[attr-defined]
            raise error
        # Jitter keeps many blocked producers from retrying in lockstep.
        await asyncio.sleep(min(delay * random.uniform(0.5, 1.0), left))
        delay = min(0.25, delay * 2)
        retried = await broker.enqueue([requests[i] for i in full])
        for i, o in zip(full, retried, strict=True):
            outcomes[i] = o
