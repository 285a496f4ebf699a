"""Raw speed of the PostgreSQL broker, without the worker, beside a raw psycopg floor.

    python benchmarks/postgres_broker_raw.py [--url postgresql://postgres@127.0.0.1/test]
        [--jobs 20000] [--runs 3] [--claim 100] [--enqueue-batch 500] [--floor-only]

Per run, in a fresh private schema: enqueue ``--jobs`` jobs in batches, then drain them
with a loop that claims ``--claim`` at a time and acks them in one settle. The floor does
the same with the fewest statements a SKIP LOCKED queue needs, batched (one UPDATE ...
RETURNING to claim, one UPDATE to record the results), on a bare table with one partial
index. Reports jobs/s, client CPU (this process) and server CPU (the backends serving
this run, read from /proc) in microseconds per job, and the median over the runs.
Schemas are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import psycopg  # noqa: E402

from offload.brokers.base import Ack, EnqueueRequest  # noqa: E402
from offload.brokers.postgres import PostgresBroker  # noqa: E402

PAYLOAD = b'{"v":1,"args":[12345],"kwargs":{"to":"someone@example.com"}}' + b" " * 100
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    jobs: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.wall_s

    def us(self, seconds: float) -> float:
        return seconds / self.jobs * 1e6


class ServerCpu:
    """CPU time of the PostgreSQL backends whose application_name is ours."""

    def __init__(self, url: str, app: str) -> None:
        self.url = url
        self.app = app

    def pids(self) -> list[int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [self.app]
            ).fetchall()
        return [pid for (pid,) in rows]

    @staticmethod
    def cpu(pids: list[int]) -> float:
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / TICKS


def requests(n: int, now: float) -> list[EnqueueRequest]:
    return [
        EnqueueRequest(
            id=uuid.uuid4().hex,
            queue="bench",
            name="bench.noop",
            payload=PAYLOAD,
            enqueued_at=now,
        )
        for _ in range(n)
    ]


async def timed(work, jobs: int, server: ServerCpu) -> Phase:  # type: ignore[no-untyped-def]
    pids = await asyncio.to_thread(server.pids)
    s0 = server.cpu(pids)
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Phase(jobs, wall, cpu, server.cpu(pids) - s0)


def with_params(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


async def broker_run(args: argparse.Namespace) -> tuple[Phase, Phase]:
    app = f"offload-bench-{uuid.uuid4().hex[:6]}"
    schema = f"offload_bench_{uuid.uuid4().hex[:8]}"
    broker = PostgresBroker(with_params(args.url, schema=schema, application_name=app))
    server = ServerCpu(with_params(args.url, application_name="offload-bench-probe"), app)
    await broker.open()
    try:
        batches = [
            requests(min(args.enqueue_batch, args.jobs - i), time.time())
            for i in range(0, args.jobs, args.enqueue_batch)
        ]

        async def enqueue() -> None:
            for batch in batches:
                await broker.enqueue(batch)

        async def drain() -> None:
            left = args.jobs
            while left:
                got = await broker.claim(["bench"], "w", args.claim, 60.0)
                assert got, f"{left} jobs missing"
                ok = await broker.settle([Ack(d, b"ok") for d in got])
                assert all(ok)
                left -= len(got)

        enq = await timed(enqueue, args.jobs, server)
        dra = await timed(drain, args.jobs, server)
        return enq, dra
    finally:
        await broker.close()
        await drop(args.url, schema)


FLOOR_SCHEMA = """
CREATE SCHEMA {s};
CREATE TABLE {s}.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    state smallint NOT NULL DEFAULT 0,
    payload bytea NOT NULL,
    lease_token bigint,
    lease_expires float8,
    result bytea
);
CREATE INDEX ON {s}.jobs (queue, id) WHERE state = 0;
"""
FLOOR_CLAIM = """
UPDATE {s}.jobs SET state = 1, lease_token = 1 + floor(random() * 1e15)::bigint,
       lease_expires = %s
 WHERE id IN (SELECT id FROM {s}.jobs WHERE queue = %s AND state = 0
               ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, payload, lease_token
"""
FLOOR_ACK = """
UPDATE {s}.jobs j SET state = 2, result = %s, lease_token = NULL
  FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, token)
 WHERE j.id = u.id AND j.state = 1 AND j.lease_token = u.token
"""


async def floor_run(args: argparse.Namespace) -> tuple[Phase, Phase]:
    app = f"offload-floor-{uuid.uuid4().hex[:6]}"
    schema = f"offload_floor_{uuid.uuid4().hex[:8]}"
    server = ServerCpu(with_params(args.url, application_name="offload-bench-probe"), app)
    s = f'"{schema}"'
    conn = await psycopg.AsyncConnection.connect(
        with_params(args.url, application_name=app), autocommit=True
    )
    try:
        await conn.execute(FLOOR_SCHEMA.format(s=s).encode())
        claim, ack = FLOOR_CLAIM.format(s=s).encode(), FLOOR_ACK.format(s=s).encode()
        insert = f"INSERT INTO {s}.jobs (queue, payload) SELECT %s, p FROM unnest(%s::bytea[]) p"

        async def enqueue() -> None:
            for i in range(0, args.jobs, args.enqueue_batch):
                n = min(args.enqueue_batch, args.jobs - i)
                await conn.execute(insert.encode(), ["bench", [PAYLOAD] * n])

        async def drain() -> None:
            left = args.jobs
            while left:
                cur = await conn.execute(claim, [time.time() + 60, "bench", args.claim])
                got = await cur.fetchall()
                assert got
                await conn.execute(ack, [b"ok", [r[0] for r in got], [r[2] for r in got]])
                left -= len(got)

        enq = await timed(enqueue, args.jobs, server)
        dra = await timed(drain, args.jobs, server)
        return enq, dra
    finally:
        await conn.close()
        await drop(args.url, schema)


async def drop(url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def report(label: str, phases: list[Phase]) -> None:
    for i, p in enumerate(phases, 1):
        print(
            f"  {label} run {i}: {p.rate:>9,.0f} jobs/s   client {p.us(p.cpu_s):5.1f} µs/job"
            f"   server {p.us(p.server_cpu_s):5.1f} µs/job"
        )
    rate = statistics.median(p.rate for p in phases)
    client = statistics.median(p.us(p.cpu_s) for p in phases)
    server = statistics.median(p.us(p.server_cpu_s) for p in phases)
    print(
        f"  {label} median: {rate:>9,.0f} jobs/s   client {client:5.1f} µs/job"
        f"   server {server:5.1f} µs/job"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--claim", type=int, default=100)
    parser.add_argument("--enqueue-batch", type=int, default=500)
    parser.add_argument("--floor-only", action="store_true")
    parser.add_argument("--broker-only", action="store_true")
    args = parser.parse_args()
    print(f"{args.jobs:,} jobs per run, claim {args.claim}, settle {args.claim}, {args.runs} runs")
    suites = []
    if not args.broker_only:
        suites.append(("floor", floor_run))
    if not args.floor_only:
        suites.append(("broker", broker_run))
    for label, run in suites:
        results = [await run(args) for _ in range(args.runs)]
        print(
            f"{label}: raw psycopg, SKIP LOCKED" if label == "floor" else f"{label}: PostgresBroker"
        )
        report("enqueue", [r[0] for r in results])
        report("drain  ", [r[1] for r in results])


if __name__ == "__main__":
    asyncio.run(main())
