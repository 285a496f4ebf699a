"""The Redis broker against a raw redis-py floor, on a private redis-server.

The floor is the fewest Redis commands a queue needs, through the same client (redis-py
asyncio with hiredis): enqueue = one LPUSH of a batch; claim = RPOP count 100, then one
HSET marking the batch as running; ack = one pipeline of HDEL (running) and HSET
(results). A second floor also keeps a record per job (HSET per job in each phase),
the least a queue that finds jobs by id must write. The broker runs the same loop
through its protocol: enqueue batches, then claim 100 / settle 100 until empty.

Reported per phase: jobs/s (wall clock), µs of this process's CPU per job, µs of the
server's CPU per job (INFO cpu), the median of several runs, and broker / floor.

    .venv/bin/python benchmarks/redis_broker_raw.py [--jobs 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from offload.brokers.base import Ack, EnqueueRequest
from offload.brokers.redis import RedisBroker

BATCH = 100
KINDS = ("floor", "record floor", "broker")
PAYLOAD = b"x" * 120


@dataclass
class Sample:
    wall: float
    cpu: float
    server_cpu: float


async def server_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Meter:
    """Wall clock, this process's CPU and the server's CPU over one phase."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def __aenter__(self) -> Meter:
        self.s0 = await server_cpu(self.client)
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sample = Sample(
            time.perf_counter() - self.w0,
            time.process_time() - self.c0,
            await server_cpu(self.client) - self.s0,
        )


async def floor_run(client: aioredis.Redis, n: int) -> tuple[Sample, Sample]:
    q, running, results = f"floor:{uuid.uuid4().hex}", "floor:running", "floor:results"
    items = [f"{i:08d}".encode() + PAYLOAD for i in range(n)]
    async with Meter(client) as enq:
        for i in range(0, n, BATCH):
            await client.lpush(q, *items[i : i + BATCH])
    done = 0
    async with Meter(client) as drain:
        while True:
            batch = await client.rpop(q, BATCH)
            if not batch:
                break
            ids = [item[:8] for item in batch]
            await client.hset(running, mapping=dict.fromkeys(ids, b"1"))
            pipe = client.pipeline(transaction=False)
            pipe.hdel(running, *ids)
            pipe.hset(results, mapping=dict.fromkeys(ids, b"ok"))
            await pipe.execute()
            done += len(batch)
    assert done == n, (done, n)
    await client.delete(q, running, results)
    return enq.sample, drain.sample


async def record_floor_run(client: aioredis.Redis, n: int) -> tuple[Sample, Sample]:
    """The floor plus what any queue with lookup by id needs: a record per job (a hash
    with payload and state), written and updated in the same pipelines."""
    q = f"rfloor:{uuid.uuid4().hex}"
    ids = [f"{i:08d}".encode() for i in range(n)]
    async with Meter(client) as enq:
        for i in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for job in ids[i : i + BATCH]:
                pipe.hset(b"rfloor:j:" + job, mapping={b"p": PAYLOAD, b"s": b"queued"})
            pipe.lpush(q, *ids[i : i + BATCH])
            await pipe.execute()
    done = 0
    async with Meter(client) as drain:
        while True:
            batch = await client.rpop(q, BATCH)
            if not batch:
                break
            pipe = client.pipeline(transaction=False)
            for job in batch:
                pipe.hset(b"rfloor:j:" + job, b"s", b"running").hget(b"rfloor:j:" + job, b"p")
            await pipe.execute()
            pipe = client.pipeline(transaction=False)
            for job in batch:
                pipe.hset(b"rfloor:j:" + job, mapping={b"s": b"succeeded", b"r": b"ok"})
            await pipe.execute()
            done += len(batch)
    assert done == n, (done, n)
    return enq.sample, drain.sample


async def broker_run(client: aioredis.Redis, url: str, n: int) -> tuple[Sample, Sample]:
    broker = RedisBroker(f"{url}?prefix=bench:{uuid.uuid4().hex}")
    await broker.open()
    now = time.time()
    reqs = [
        EnqueueRequest(id=f"j{i}", queue="bench", name="task", payload=PAYLOAD, enqueued_at=now)
        for i in range(n)
    ]
    async with Meter(client) as enq:
        for i in range(0, n, BATCH):
            await broker.enqueue(reqs[i : i + BATCH])
    done = 0
    async with Meter(client) as drain:
        while True:
            got = await broker.claim(["bench"], "w", BATCH, 60)
            if not got:
                break
            ok = await broker.settle([Ack(d, b"ok") for d in got])
            done += sum(ok)
    assert done == n, (done, n)
    await broker.close()
    return enq.sample, drain.sample


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(client: aioredis.Redis) -> None:
    for _ in range(100):
        try:
            await client.ping()
            return
        except (aioredis.ConnectionError, OSError):
            await asyncio.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def median(samples: list[Sample], n: int) -> tuple[float, float, float]:
    return (
        n / statistics.median(s.wall for s in samples),
        statistics.median(s.cpu for s in samples) / n * 1e6,
        statistics.median(s.server_cpu for s in samples) / n * 1e6,
    )


async def main(n: int, runs: int) -> None:
    # The private server runs without an AOF on purpose (CPU, not fsync, is measured).
    logging.getLogger("offload.brokers.redis").setLevel(logging.ERROR)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="offload-bench-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        await wait_ready(client)
        results: dict[str, list[Sample]] = {}
        for _ in range(runs):
            for kind in KINDS:
                await client.flushall()
                if kind == "floor":
                    enq, drain = await floor_run(client, n)
                elif kind == "record floor":
                    enq, drain = await record_floor_run(client, n)
                else:
                    enq, drain = await broker_run(client, url, n)
                results.setdefault(f"{kind} enqueue", []).append(enq)
                results.setdefault(f"{kind} drain", []).append(drain)
        report(results, n, runs)
    finally:
        await client.aclose()
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict[str, list[Sample]], n: int, runs: int) -> None:
    print(f"{n} jobs, batches of {BATCH}, {len(PAYLOAD)} B payloads, median of {runs} runs")
    print(f"{'loop':<22}{'jobs/s':>10}{'x floor':>9}{'µs CPU/job':>12}{'µs server/job':>15}")
    for phase in ("enqueue", "drain"):
        floor_rate = median(results[f"floor {phase}"], n)[0]
        for kind in KINDS:
            rate, cpu, srv = median(results[f"{kind} {phase}"], n)
            label = f"{kind} {phase}"
            print(f"{label:<22}{rate:>10,.0f}{rate / floor_rate:>9.2f}{cpu:>12.1f}{srv:>15.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.runs))
