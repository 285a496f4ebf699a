"""Events throughput: publish rate, per-group consume rate, and the cost of fan-out.

    python benchmarks/events.py [--broker URL] [--events 10000] [--runs 3]

For one group and for five groups on one topic: how fast events are published (batches
of 500), how fast one worker process consumes one group's deliveries, and that worker's
CPU per event, beside the same worker's CPU per no-op job on the same backend.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import cpu_seconds, fresh_app, run_namespace  # noqa: E402
from offload.brokers import open_broker  # noqa: E402
from offload.brokers.base import group_queue  # noqa: E402


def worker_for(url: str, queues: list[str]):  # type: ignore[no-untyped-def]
    import os
    import subprocess

    env = dict(os.environ, OFFLOAD_BROKER=url, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "offload",
            "worker",
            "benchmarks.bench_app:app",
            "-Q",
            ",".join(queues),
            "-c",
            "100",
            "--log-level",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
    )


async def drain(url: str, queues: list[str], total: int, proc) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    broker = open_broker(url)
    await broker.open()
    cpu0 = None
    try:
        while True:
            stats = await broker.stats(queues)
            started = sum(s.counters.started for s in stats)
            if cpu0 is None and started > 0:
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            if sum(s.counts.succeeded for s in stats) >= total:
                return time.perf_counter() - t0, cpu_seconds(proc.pid) - (cpu0 or 0)
            await asyncio.sleep(0.005)
    finally:
        await broker.close()


async def one(url: str, topic: str, groups: int, n: int) -> tuple[float, float, float]:
    bench = await fresh_app(url)
    t = time.perf_counter()
    for i in range(0, n, 500):
        await bench.app.publish_many(topic, [{"i": j} for j in range(i, min(n, i + 500))])
    publish = n / (time.perf_counter() - t)
    await bench.app.close()
    queue = group_queue(topic, "g0")
    proc = worker_for(url, [queue])
    try:
        span, cpu = await drain(url, [queue], n, proc)
    finally:
        proc.terminate()
        proc.wait()
    return publish, n / span, cpu / n * 1e6


async def jobs(url: str, n: int) -> float:
    bench = await fresh_app(url)
    for i in range(0, n, 1000):
        await bench.noop.enqueue_many([(j,) for j in range(i, min(n, i + 1000))])
    await bench.app.close()
    proc = worker_for(url, ["bench"])
    try:
        _, cpu = await drain(url, ["bench"], n, proc)
    finally:
        proc.terminate()
        proc.wait()
    return cpu / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--broker")
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    rows: dict[str, list[float]] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp, run_namespace(args.broker, tmp, "ev") as url:
            pub1, con1, cpu1 = asyncio.run(one(url, "bench.one", 1, args.events))
            pub5, con5, cpu5 = asyncio.run(one(url, "bench.five", 5, args.events))
            job_cpu = asyncio.run(jobs(url, args.events))
            for k, v in {
                "pub1": pub1,
                "con1": con1,
                "cpu1": cpu1,
                "pub5": pub5,
                "con5": con5,
                "cpu5": cpu5,
                "job_cpu": job_cpu,
            }.items():
                rows.setdefault(k, []).append(v)
            print({k: round(v[-1], 1) for k, v in rows.items()}, file=sys.stderr)
    m = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"\noffload events, {args.events:,} events, one worker process, median of {args.runs} runs"
    )
    print(f"broker: {args.broker or 'sqlite (fresh file per run)'}\n")
    print(f"{'':28}{'1 group':>14}{'5 groups':>14}")
    print(f"{'publish (events/s)':28}{m['pub1']:>14,.0f}{m['pub5']:>14,.0f}")
    print(f"{'consume one group (ev/s)':28}{m['con1']:>14,.0f}{m['con5']:>14,.0f}")
    print(f"{'worker CPU per event (µs)':28}{m['cpu1']:>14,.1f}{m['cpu5']:>14,.1f}")
    print(
        f"\nno-op job, same worker: {m['job_cpu']:.1f} µs CPU per job; "
        f"an event costs {m['cpu1'] / m['job_cpu']:.2f}x a job (target <= 1.5x)"
    )
    ratio = m["pub5"] / m["pub1"]
    print(f"fan-out cost: publishing to 5 groups runs at {ratio:.2f}x the 1-group rate")


if __name__ == "__main__":
    main()
