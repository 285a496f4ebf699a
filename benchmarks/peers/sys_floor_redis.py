"""The raw redis-py floor: the fewest Redis commands a queue needs, through redis-py's
asyncio client (with hiredis, as offload uses it).

Enqueue: one LPUSH per job, or one LPUSH of the whole batch. Claim: one BLMPOP of up to
100 jobs (blocking only when the list is empty, so an idle worker wakes at once), then one
HSET marking them running. Ack: one pipelined round trip (HDEL running, HSET results) for
the whole batch. A job is ``<8-byte hex id>:<index>``. No retries, leases or delays:
this is what a queue cannot do with less.
"""

from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio as aioredis
from record import record

QUEUE, RUNNING, RESULTS = "floor:q", "floor:running", "floor:results"
CLAIM = 100
SETTINGS = f"asyncio redis-py; BLMPOP {CLAIM} + HSET running; ack = 1 pipeline"


def _job(i: int) -> bytes:
    return b"%s:%d" % (os.urandom(4).hex().encode(), i)


def worker_cmd() -> list[str]:
    return [sys.executable, __file__]


class Producer:
    async def open(self) -> None:
        self.client = aioredis.Redis.from_url(os.environ["PEERS_REDIS_URL"])

    async def close(self) -> None:
        await self.client.aclose()

    async def enqueue(self, i: int) -> None:
        await self.client.lpush(QUEUE, _job(i))

    async def enqueue_batch(self, indices: list[int]) -> None:
        await self.client.lpush(QUEUE, *[_job(i) for i in indices])


async def work() -> None:
    client = aioredis.Redis.from_url(os.environ["PEERS_REDIS_URL"])
    while True:
        got = await client.blmpop(1, 1, QUEUE, direction="RIGHT", count=CLAIM)
        if not got:
            continue
        jobs = got[1]
        ids = [job.split(b":", 1)[0] for job in jobs]
        await client.hset(RUNNING, mapping=dict.fromkeys(ids, b"1"))
        for job in jobs:
            record(int(job.split(b":", 1)[1]))
        pipe = client.pipeline(transaction=False)
        pipe.hdel(RUNNING, *ids)
        pipe.hset(RESULTS, mapping=dict.fromkeys(ids, b"ok"))
        await pipe.execute()


if __name__ == "__main__":
    asyncio.run(work())
