"""Worker memory with a deep backlog: it must hold only what it runs.

    python benchmarks/memory.py [--broker URL] [--jobs 100000] [--delayed 100000]

Enqueues ``--jobs`` ready no-op jobs and ``--delayed`` jobs due in an hour, starts one
worker process (concurrency 100), samples its resident memory every 50 ms while it
drains the ready jobs, and prints the peak next to an idle worker's baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.events import worker_for  # noqa: E402
from benchmarks.throughput import fresh_app  # noqa: E402
from offload.brokers import open_broker  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill(url: str, ready: int, delayed: int) -> None:
    bench = await fresh_app(url)
    for i in range(0, ready, 2000):
        await bench.noop.enqueue_many([(j,) for j in range(i, min(ready, i + 2000))])
    later = bench.noop.options(delay=3600)
    for i in range(0, delayed, 2000):
        await later.enqueue_many([(j,) for j in range(i, min(delayed, i + 2000))])
    await bench.app.close()


async def succeeded(url: str) -> int:
    broker = open_broker(url)
    await broker.open()
    try:
        [s] = await broker.stats(["bench"])
        return s.counts.succeeded
    finally:
        await broker.close()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--broker")
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--delayed", type=int, default=100_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.broker or f"sqlite:///{tmp}/memory.db"
        idle = worker_for(url, ["bench-idle"])
        time.sleep(3)
        baseline = rss_mb(idle.pid)
        idle.terminate()
        idle.wait()
        asyncio.run(fill(url, args.jobs, args.delayed))
        proc = worker_for(url, ["bench"])
        peak, started = 0.0, time.monotonic()
        try:
            while True:
                peak = max(peak, rss_mb(proc.pid))
                if (
                    int(time.monotonic() - started) % 1 == 0
                    and asyncio.run(succeeded(url)) >= args.jobs
                ):
                    break
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait()
    print(
        f"\nworker memory, {args.jobs:,} ready + {args.delayed:,} delayed jobs waiting, "
        f"concurrency 100"
    )
    print(f"idle worker RSS      {baseline:7.1f} MB")
    print(
        f"peak RSS draining    {peak:7.1f} MB   (+{peak - baseline:.1f} MB; target < 80 MB total)"
    )


if __name__ == "__main__":
    main()
