"""SAQ on Redis: ``concurrency`` = 100 (offload's job concurrency), one worker process
(``saq --workers 1``, its default)."""

import os

from _bin import script
from record import record
from saq import Queue

CONCURRENCY = 100
SETTINGS = f"concurrency={CONCURRENCY}, --workers 1"

queue = Queue.from_url(os.environ["PEERS_REDIS_URL"], name="bench")


async def noop(ctx: dict, *, i: int) -> None:  # type: ignore[type-arg]
    record(i)


settings = {"queue": queue, "functions": [noop], "concurrency": CONCURRENCY}


def worker_cmd() -> list[str]:
    return [script("saq"), "sys_saq.settings", "--workers", "1", "--quiet"]


class Producer:
    async def open(self) -> None:
        await queue.connect()

    async def close(self) -> None:
        await queue.disconnect()

    async def enqueue(self, i: int) -> None:
        await queue.enqueue("noop", i=i)
