"""Back pressure, shown: producers that outpace the workers, without and with a bound.

    python benchmarks/backpressure_demo.py [--broker memory://] [--seconds 10]

Four producers try to enqueue 400 jobs/s (10 KB each); one worker finishes 100/s
(2 slots x 20 ms). Each phase runs in a fresh process and prints, every second, the queue
depth, the producers' and the workers' rates, and the process's resident memory (the
memory broker keeps jobs in this process):

* without a bound the depth, and memory, grow by ~300 jobs every second, for as long
  as the producers keep going;
* with ``app.queue("demo", max_depth=200, when_full="block")`` the producers slow to the
  workers' pace, the depth stays at the bound and memory stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offload import App  # noqa: E402

PAYLOAD = "x" * 10_000
PRODUCERS = 4
OFFERED_PER_PRODUCER = 100.0  # jobs/s each: 400/s in all
BOUND = 200


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def phase(url: str, bounded: bool, seconds: float) -> None:
    app = App(url, result_ttl=1.0)
    if bounded:
        app.queue("demo", max_depth=BOUND, when_full="block", block_timeout=3600)

    @app.task(name="demo.work", queue="demo")
    async def work(body: str) -> None:
        await asyncio.sleep(0.02)

    sent = 0

    async def produce() -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += 1 / OFFERED_PER_PRODUCER
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await work.enqueue(PAYLOAD)
            sent += 1
            next_at = max(next_at, loop.time() - 0.1)  # a blocked producer does not "catch up"

    worker = await app.worker(queues=("demo",), concurrency=2, prune_every_s=1.0, poll_s=0.1)
    running = asyncio.create_task(worker.run())
    producers = [asyncio.create_task(produce()) for _ in range(PRODUCERS)]
    broker = await app.broker()
    start_rss = rss_mb()
    title = f"max_depth={BOUND}, when_full='block'" if bounded else "no bound"
    print(f"--- {title}: offered {PRODUCERS * OFFERED_PER_PRODUCER:.0f} jobs/s")
    print(f"{'t':>4} {'depth':>7} {'produced/s':>11} {'finished/s':>11} {'RSS MB':>8}")
    last_sent, last_done, peak, done, rss = 0, 0, 0, 0, [start_rss]
    try:
        for t in range(1, int(seconds) + 1):
            await asyncio.sleep(1.0)
            [stats] = await broker.stats(["demo"])
            done = stats.counters.succeeded
            peak = max(peak, stats.counts.pending)
            rss.append(rss_mb())
            print(
                f"{t:>4} {stats.counts.pending:>7,} {sent - last_sent:>11,} "
                f"{done - last_done:>11,} {rss[-1]:>8.1f}"
            )
            last_sent, last_done = sent, done
    finally:
        for p in producers:
            p.cancel()
        await asyncio.gather(*producers, return_exceptions=True)
        worker.stop(grace_s=1)
        await running
        await app.close()
    half = len(rss) // 2
    growth = (rss[-1] - rss[half]) / max(1, len(rss) - 1 - half)
    print(
        f"peak depth {peak:,}; memory {growth:+.2f} MB/s over the second half; producers "
        f"averaged {sent / seconds:,.0f} jobs/s, workers {done / seconds:,.0f} jobs/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="memory://")
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--phase", choices=["bounded", "unbounded"])
    args = parser.parse_args()
    if args.phase:
        asyncio.run(phase(args.broker, args.phase == "bounded", args.seconds))
        return
    for which in ("unbounded", "bounded"):
        cmd = [sys.executable, __file__, "--phase", which, "--broker", args.broker]
        subprocess.run([*cmd, "--seconds", str(args.seconds)], check=True)
        print()


if __name__ == "__main__":
    main()
