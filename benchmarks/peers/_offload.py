"""offload, the system under test: the app its CLI worker serves and its producer.

The broker URL comes from ``OFFLOAD_BROKER`` (set by the ``sys_offload_*`` adapters for the
producer and inherited by the worker, which is ``python -m offload worker`` from the
project's ``.venv``).
"""

from __future__ import annotations

import sys

from record import record

from offload import App

CONCURRENCY = 100
SETTINGS = f"offload worker -c {CONCURRENCY} (async tasks; claims only free slots)"

app = App(default_queue="bench")


@app.task(name="bench.noop")
async def noop(i: int) -> None:
    record(i)


def worker_cmd() -> list[str]:
    return [
        sys.executable, "-m", "offload", "worker", "_offload:app",
        "-Q", "bench", "-c", str(CONCURRENCY), "--log-level", "WARNING",
    ]  # fmt: skip


class Producer:
    async def open(self) -> None:
        await app.open()

    async def close(self) -> None:
        await app.close()

    async def enqueue(self, i: int) -> None:
        await noop.enqueue(i)

    async def enqueue_batch(self, indices: list[int]) -> None:
        await noop.enqueue_many([(i,) for i in indices])
