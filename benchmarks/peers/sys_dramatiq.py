"""Dramatiq with its Redis broker and default middleware, no result backend.

``dramatiq --processes 1 --threads 8``: one worker process (plus Dramatiq's supervising
parent, charged too) with Dramatiq's default 8 worker threads.
"""

import os

import dramatiq
from _bin import script
from dramatiq.brokers.redis import RedisBroker
from record import record

THREADS = 8
SETTINGS = f"--processes 1 --threads {THREADS} (Dramatiq's default thread count)"

dramatiq.set_broker(RedisBroker(url=os.environ["PEERS_REDIS_URL"]))


@dramatiq.actor(queue_name="bench")
def noop(i: int) -> None:
    record(i)


def worker_cmd() -> list[str]:
    return [script("dramatiq"), "sys_dramatiq", "--processes", "1", "--threads", str(THREADS)]


class Producer:
    def enqueue(self, i: int) -> None:
        noop.send(i)
