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

FIELDS = ("VmRSS", "RssAnon", "RssFile")


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory in MB: all of it (VmRSS), the process's own (RssAnon), and mapped
    file pages (RssFile: the code, and SQLite's mmap of the database, which is the OS page
    cache shared by every process on the file)."""
    out = dict.fromkeys(FIELDS, 0.0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in out:
            out[name] = int(rest.split()[0]) / 1024
    return out


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
        peak, started = dict.fromkeys(FIELDS, 0.0), time.monotonic()
        try:
            while True:
                now = rss_mb(proc.pid)
                peak = {k: max(peak[k], now[k]) for k in FIELDS}
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
    print(f"{'MB':<20}{'idle':>8}{'peak':>8}")
    for k in FIELDS:
        print(f"{k:<20}{baseline[k]:>8.1f}{peak[k]:>8.1f}")
    print("target: VmRSS < 80 MB while draining")


if __name__ == "__main__":
    main()
