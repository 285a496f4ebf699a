"""The raw psycopg floor: the fewest statements a PostgreSQL queue needs, through
psycopg 3's asyncio connection (as offload uses it), fsync on.

Enqueue: one INSERT per job, or one ``INSERT ... SELECT unnest(%s)`` per batch; a
statement-level trigger sends one NOTIFY per statement. Claim: one ``UPDATE ... WHERE id IN
(SELECT ... LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING``. Ack: one ``DELETE ... WHERE id =
ANY(%s)`` for the batch. An idle worker waits on LISTEN (a second connection), so it wakes
at once. No retries, leases expiry or results.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import psycopg
from psycopg_pool import AsyncConnectionPool
from record import record

CLAIM = 100
SETTINGS = f"asyncio psycopg; SKIP LOCKED claim of {CLAIM}; DELETE of the batch; LISTEN wake-up"

SCHEMA = """
CREATE TABLE floor_jobs (
    id bigserial PRIMARY KEY,
    arg bigint NOT NULL,
    state smallint NOT NULL DEFAULT 0,
    lease_until double precision
);
CREATE INDEX floor_jobs_ready ON floor_jobs (id) WHERE state = 0;
CREATE FUNCTION floor_notify() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('floor_jobs', ''); RETURN NULL; END $$;
CREATE TRIGGER floor_jobs_notify AFTER INSERT ON floor_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION floor_notify();
"""
CLAIM_SQL = """
UPDATE floor_jobs SET state = 1, lease_until = %s
WHERE id IN (SELECT id FROM floor_jobs WHERE state = 0 ORDER BY id LIMIT %s
             FOR UPDATE SKIP LOCKED)
RETURNING id, arg
"""


def setup() -> None:
    with psycopg.connect(os.environ["PEERS_PG_URL"], autocommit=True) as conn:
        conn.execute(SCHEMA)


def worker_cmd() -> list[str]:
    return [sys.executable, __file__]


class Producer:
    """A pool of up to 10 connections (offload's default too), so concurrent sends commit
    in parallel (one connection with fsync on is one commit per disk flush)."""

    async def open(self) -> None:
        self.pool = AsyncConnectionPool(
            os.environ["PEERS_PG_URL"], min_size=1, max_size=10,
            kwargs={"autocommit": True}, open=False,
        )  # fmt: skip
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def enqueue(self, i: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("INSERT INTO floor_jobs (arg) VALUES (%s)", [i])

    async def enqueue_batch(self, indices: list[int]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO floor_jobs (arg) SELECT unnest(%s::bigint[])", [indices]
            )


async def listen(url: str, wake: asyncio.Event) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute("LISTEN floor_jobs")
    async for _ in conn.notifies():
        wake.set()


async def work() -> None:
    url = os.environ["PEERS_PG_URL"]
    wake = asyncio.Event()
    listener = asyncio.create_task(listen(url, wake))
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    loop = asyncio.get_running_loop()
    while True:
        wake.clear()
        cur = await conn.execute(CLAIM_SQL, [loop.time() + 30, CLAIM])
        rows = await cur.fetchall()
        if not rows:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 1.0)
            continue
        for _, arg in rows:
            record(arg)
        await conn.execute("DELETE FROM floor_jobs WHERE id = ANY(%s)", [[r[0] for r in rows]])
    listener.cancel()


if __name__ == "__main__":
    asyncio.run(work())
