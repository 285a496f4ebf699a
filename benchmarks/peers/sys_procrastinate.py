"""Procrastinate on the benchmark's PostgreSQL database (its schema applied first):
``procrastinate worker --concurrency 10``; batch: ``Task.batch_defer_async``."""

import os

from _bin import script
from procrastinate import App, PsycopgConnector
from record import record

CONCURRENCY = int(os.environ.get("PEERS_PROCRASTINATE_CONCURRENCY", "10"))
SETTINGS = f"worker --concurrency {CONCURRENCY} (LISTEN/NOTIFY on, its default)"

app = App(connector=PsycopgConnector(conninfo=os.environ["PEERS_PG_URL"]))


@app.task(name="noop", queue="bench")
async def noop(i: int) -> None:
    record(i)


def setup() -> None:
    with app.open():
        app.schema_manager.apply_schema()


def worker_cmd() -> list[str]:
    return [
        script("procrastinate"), "--app", "sys_procrastinate.app", "worker",
        "--concurrency", str(CONCURRENCY), "--queues", "bench",
    ]  # fmt: skip


class Producer:
    async def open(self) -> None:
        await app.open_async()

    async def close(self) -> None:
        await app.close_async()

    async def enqueue(self, i: int) -> None:
        await noop.defer_async(i=i)

    async def enqueue_batch(self, indices: list[int]) -> None:
        await noop.batch_defer_async(*[{"i": i} for i in indices])
