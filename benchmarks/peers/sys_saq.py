"""SAQ on Redis: ``concurrency`` = 100 (offload's job concurrency), one worker process
(``saq --workers 1``, its default).

redis-py 8 caps a client's connection pool at 100 and raises ``MaxConnectionsError`` past
it; SAQ's worker holds a connection per concurrent dequeue, so at ``concurrency=100`` it
fails with the default client. The queue is made as ``Queue.from_url`` makes it, with a
larger pool (``max_connections=1000``).
"""

import os

from _bin import script
from record import record
from redis import asyncio as aioredis
from saq.queue.redis import RedisQueue

CONCURRENCY = 100
SETTINGS = f"concurrency={CONCURRENCY}, --workers 1; redis-py pool max_connections=1000"

client = aioredis.from_url(os.environ["PEERS_REDIS_URL"], max_connections=1000)
queue = RedisQueue(client, name="bench")


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
