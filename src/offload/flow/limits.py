"""Bounded queues: what happens when a producer outruns the workers.

A queue declared with ``max_depth`` holds at most that many pending jobs. The broker checks
the bound atomically with the insert (so concurrent producers never overshoot) and answers
``full``; this module turns ``full`` into the queue's policy:

* ``reject``: raise :class:`~offload.errors.QueueFull` at once, carrying ``retry_after_s``
  (what an HTTP layer turns into ``429`` + ``Retry-After``);
* ``block``: wait, with backoff, until there is room or ``block_timeout_s`` passes, then
  raise ``QueueFull``. Producers thereby slow to the workers' pace.
"""

from __future__ import annotations

import asyncio
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

    Raises:
        QueueFull: a ``reject`` queue is full, or a ``block`` queue stayed full too long.
            Requests before it in the batch may have been stored (see ``outcomes``).
    """
    outcomes = await broker.enqueue(requests)
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
        if cfg.when_full == "reject" or loop.time() - started >= timeout:
            error = QueueFull(
                queue,
                first.depth,
                cfg.max_depth or first.depth,
                await retry_after(queue, first.depth),
            )
            error.outcomes = outcomes  # type: ignore[attr-defined]
            raise error
        await asyncio.sleep(min(delay, max(0.0, timeout - (loop.time() - started))))
        delay = min(0.25, delay * 2)
        retried = await broker.enqueue([requests[i] for i in full])
        for i, o in zip(full, retried, strict=True):
            outcomes[i] = o
