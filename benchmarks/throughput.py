"""Throughput and latency of offload with one worker process, on any broker.

    python benchmarks/throughput.py [--broker URL] [--jobs 20000] [--runs 3]

Measures, for no-op jobs: enqueue rate one at a time and in batches, the drain rate of a
backlog by one worker process (and that process's CPU time per job), and the
enqueue-to-start latency p50/p99 at a steady 500 jobs/s. Prints medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offload.brokers import open_broker  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    enqueue_single: float
    enqueue_batch: float
    drain: float
    cpu_us_per_job: float
    lat_p50_ms: float
    lat_p99_ms: float


@contextlib.contextmanager
def run_namespace(base: str | None, tmp: str, name: str) -> Iterator[str]:
    """A broker URL with nothing in it for one run, removed afterwards: a fresh SQLite
    file by default; on ``base``, a key prefix (Redis) or schema (PostgreSQL) of its own,
    so a run never counts an earlier run's jobs."""
    if base is None:
        yield f"sqlite:///{tmp}/{name}.db"
        return
    parts = urlsplit(base)
    tag = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    params = dict(parse_qsl(parts.query))
    if parts.scheme.startswith("redis"):
        params["prefix"] = tag
    elif parts.scheme.startswith("postgres"):
        params["schema"] = tag
    else:  # sqlite:// or memory://: the URL names its own store
        yield base
        return
    yield urlunsplit(parts._replace(query=urlencode(params)))
    asyncio.run(_drop(parts, tag))


async def _drop(parts: SplitResult, tag: str) -> None:
    plain = urlunsplit(parts._replace(query=""))
    if parts.scheme.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.from_url(plain)
        try:
            async for key in client.scan_iter(match=f"{tag}*", count=1000):
                await client.unlink(key)
        finally:
            await client.aclose()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(plain, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def worker(url: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OFFLOAD_BROKER=url, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "offload",
            "worker",
            "benchmarks.bench_app:app",
            "-Q",
            "bench",
            "-c",
            str(concurrency),
            "--log-level",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
    )


async def fresh_app(url: str):  # type: ignore[no-untyped-def]
    from benchmarks import bench_app

    await bench_app.app.close()
    bench_app.app._override = None
    bench_app.app.use_broker(url)
    await bench_app.app.open()
    return bench_app


async def wait_drained(url: str, total: int, proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """Poll until ``total`` jobs succeeded; return (first start, last finish) and CPU span."""
    broker = open_broker(url)
    await broker.open()
    cpu0 = None
    try:
        while True:
            [s] = await broker.stats(["bench"])
            if cpu0 is None and s.counters.started > 0:
                cpu0 = cpu_seconds(proc.pid)
            if s.counts.succeeded >= total:
                cpu1 = cpu_seconds(proc.pid)
                timings = await broker.timings("bench", since=0, limit=total + 10)
                first = min(t.started_at for t in timings)
                last = max(t.finished_at for t in timings)
                return last - first, (cpu1 - (cpu0 or cpu1))
            await asyncio.sleep(0.01)
    finally:
        await broker.close()


async def one_run(url: str, jobs: int, concurrency: int) -> Run:
    bench = await fresh_app(url)
    single_n = min(2000, jobs)
    t = time.perf_counter()
    for i in range(single_n):
        await bench.noop.enqueue(i)
    enqueue_single = single_n / (time.perf_counter() - t)
    await (await bench.app.broker()).purge("bench")

    t = time.perf_counter()
    for start in range(0, jobs, 1000):
        await bench.noop.enqueue_many([(i,) for i in range(start, min(jobs, start + 1000))])
    enqueue_batch = jobs / (time.perf_counter() - t)
    await bench.app.close()

    proc = worker(url, concurrency)
    try:
        span, cpu = await wait_drained(url, jobs, proc)
        drain = jobs / span
        lat = await latency(url, rate=500, seconds=8)
    finally:
        proc.terminate()
        proc.wait()
    return Run(enqueue_single, enqueue_batch, drain, cpu / jobs * 1e6, lat[0], lat[1])


async def latency(url: str, rate: float, seconds: float) -> tuple[float, float]:
    """Open-loop arrivals: each enqueue is sent at its scheduled time, as concurrent web
    requests would be, so a slow enqueue cannot hide latency by delaying the next one."""
    bench = await fresh_app(url)
    n = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def arrive(i: int) -> str:
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        return (await bench.noop.enqueue(i)).id

    ids = await asyncio.gather(*(arrive(i) for i in range(n)))
    broker = await bench.app.broker()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        recs = await broker.get_jobs(ids[-50:])
        if all(r is not None and r.state.is_final for r in recs):
            break
        await asyncio.sleep(0.05)
    recs = [r for i in range(0, n, 500) for r in await broker.get_jobs(ids[i : i + 500])]
    waits = sorted((r.started_at or 0) - r.enqueued_at for r in recs if r is not None)
    await bench.app.close()
    return waits[len(waits) // 2] * 1000, waits[int(len(waits) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", help="broker URL (default: a fresh SQLite file per run)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp, run_namespace(args.broker, tmp, "t") as url:
            run = asyncio.run(one_run(url, args.jobs, args.concurrency))
            runs.append(run)
            print(f"run {i + 1}: {run}", file=sys.stderr)
    med = {f: statistics.median(getattr(r, f) for r in runs) for f in Run.__dataclass_fields__}
    from offload.brokers.base import redact_url

    print(
        f"\noffload throughput, one worker process, {args.jobs:,} no-op jobs, "
        f"concurrency {args.concurrency}, median of {args.runs} runs"
    )
    print(f"broker: {redact_url(args.broker or 'sqlite:///<tmp>/bench.db')}\n")
    print(f"{'enqueue, one at a time':32} {med['enqueue_single']:>10,.0f} jobs/s")
    print(f"{'enqueue, batches of 1,000':32} {med['enqueue_batch']:>10,.0f} jobs/s")
    print(f"{'drain, one worker process':32} {med['drain']:>10,.0f} jobs/s")
    print(f"{'worker CPU per job':32} {med['cpu_us_per_job']:>10,.1f} µs")
    print(f"{'enqueue-to-start p50 @500/s':32} {med['lat_p50_ms']:>10,.2f} ms")
    print(f"{'enqueue-to-start p99 @500/s':32} {med['lat_p99_ms']:>10,.2f} ms")


if __name__ == "__main__":
    main()
