"""Taskiq with taskiq-redis's ``RedisStreamBroker`` (the one with acknowledgements, as
taskiq-redis recommends), no result backend; ``taskiq worker --workers 1
--max-async-tasks 100`` (one worker process under taskiq's supervising parent, charged
too)."""

import os

from _bin import script
from record import record
from taskiq_redis import RedisStreamBroker

MAX_ASYNC = 100
SETTINGS = f"--workers 1 --max-async-tasks {MAX_ASYNC}; RedisStreamBroker"

broker = RedisStreamBroker(url=os.environ["PEERS_REDIS_URL"], queue_name="bench")


@broker.task(task_name="noop")
async def noop(i: int) -> None:
    record(i)


def worker_cmd() -> list[str]:
    return [
        script("taskiq"), "worker", "sys_taskiq:broker",
        "--workers", "1", "--max-async-tasks", str(MAX_ASYNC),
    ]  # fmt: skip


class Producer:
    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue(self, i: int) -> None:
        await noop.kiq(i)
