"""streaq (Redis streams via coredis): ``concurrency`` = 100 (offload's), prefetch at its
default; one process (``streaq run --workers 1``). Batch: ``Worker.enqueue_many``."""

import os

from _bin import script
from record import record
from streaq import Worker

CONCURRENCY = 100
SETTINGS = f"concurrency={CONCURRENCY}, --workers 1"

worker = Worker(
    redis_url=os.environ["PEERS_REDIS_URL"], concurrency=CONCURRENCY, queue_name="bench"
)


@worker.task()
async def noop(i: int) -> None:
    record(i)


def worker_cmd() -> list[str]:
    return [script("streaq"), "run", "sys_streaq:worker", "--workers", "1"]


class Producer:
    async def open(self) -> None:
        await worker.__aenter__()

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)

    async def enqueue(self, i: int) -> None:
        await noop.enqueue(i)

    async def enqueue_batch(self, indices: list[int]) -> None:
        await worker.enqueue_many([noop.enqueue(i) for i in indices])
