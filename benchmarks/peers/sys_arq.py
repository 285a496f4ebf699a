"""arq: ``max_jobs`` = 100 (the same job concurrency as offload's worker); everything else
arq's defaults, including ``poll_delay`` = 0.5 s (arq polls for new jobs, it does not
block), which shows in its latency."""

import os

from _bin import script
from arq import create_pool
from arq.connections import RedisSettings
from record import record

MAX_JOBS = 100
SETTINGS = f"max_jobs={MAX_JOBS}; default poll_delay 0.5 s"
REDIS = RedisSettings.from_dsn(os.environ["PEERS_REDIS_URL"])


async def noop(ctx: dict, i: int) -> None:  # type: ignore[type-arg]
    record(i)


class WorkerSettings:
    functions = [noop]
    redis_settings = REDIS
    max_jobs = MAX_JOBS


def worker_cmd() -> list[str]:
    return [script("arq"), "sys_arq.WorkerSettings"]


class Producer:
    async def open(self) -> None:
        self.pool = await create_pool(REDIS)

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self, i: int) -> None:
        await self.pool.enqueue_job("noop", i)
