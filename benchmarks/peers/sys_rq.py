"""RQ with its ``SimpleWorker`` (no fork per job: how RQ's own benchmark is run; the
default worker forks a child for every job). Results kept with RQ's default TTL.
Batch enqueue: ``Queue.enqueue_many`` (one pipeline)."""

import os

from _bin import script
from record import record
from redis import Redis
from rq import Queue

SETTINGS = "rq worker -w rq.worker.SimpleWorker (one job at a time, no fork)"

queue = Queue("bench", connection=Redis.from_url(os.environ["PEERS_REDIS_URL"]))


def noop(i: int) -> None:
    record(i)


def worker_cmd() -> list[str]:
    return [
        script("rq"), "worker", "-w", "rq.worker.SimpleWorker",
        "-u", os.environ["PEERS_REDIS_URL"], "-q", "bench",
    ]  # fmt: skip


class Producer:
    def enqueue(self, i: int) -> None:
        queue.enqueue(noop, i)

    def enqueue_batch(self, indices: list[int]) -> None:
        queue.enqueue_many([Queue.prepare_data(noop, (i,)) for i in indices])
