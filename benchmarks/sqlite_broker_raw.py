"""Raw speed of the SQLite broker, without the worker: the floor the worker builds on.

    python benchmarks/sqlite_broker_raw.py [--jobs 100000] [--runs 3] [--sync FULL]
        [--enqueue-batch 1000] [--claim 100] [--delayed 0] [--dir DIR]

Per run, on a fresh database file: enqueue ``--jobs`` jobs in batches, then drain them
with a loop that claims ``--claim`` at a time and acks them in one settle. Reports
jobs/s and CPU microseconds per job (this process, both threads: the event loop and the
broker's database thread), and the median over the runs. ``--delayed N`` first adds N
jobs scheduled an hour ahead, to show that claims do not slow down with delayed jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from offload.brokers.base import Ack, EnqueueRequest  # noqa: E402
from offload.brokers.sqlite import SqliteBroker  # noqa: E402

PAYLOAD = b'{"v":1,"args":[12345],"kwargs":{"to":"someone@example.com"}}' + b" " * 100


@dataclass
class Phase:
    jobs: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.jobs * 1e6


def requests(n: int, now: float, eta: float | None = None) -> list[EnqueueRequest]:
    return [
        EnqueueRequest(
            id=uuid.uuid4().hex,
            queue="bench",
            name="bench.noop",
            payload=PAYLOAD,
            enqueued_at=now,
            eta=eta,
        )
        for _ in range(n)
    ]


async def timed(coro_factory, jobs: int) -> Phase:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    await coro_factory()
    return Phase(jobs, time.perf_counter() - wall, time.process_time() - cpu)


async def one_run(args: argparse.Namespace, folder: str) -> tuple[Phase, Phase]:
    path = os.path.join(folder, f"raw-{uuid.uuid4().hex[:8]}.db")
    broker = SqliteBroker(f"sqlite:///{path}?synchronous={args.sync}")
    await broker.open()
    try:
        if args.delayed:
            for i in range(0, args.delayed, args.enqueue_batch):
                n = min(args.enqueue_batch, args.delayed - i)
                await broker.enqueue(requests(n, time.time(), eta=time.time() + 3600))
        # Build the requests outside the timing: they are the producer's cost, not ours.
        batches = [
            requests(min(args.enqueue_batch, args.jobs - i), time.time())
            for i in range(0, args.jobs, args.enqueue_batch)
        ]

        async def enqueue_all() -> None:
            for batch in batches:
                await broker.enqueue(batch)

        async def drain() -> None:
            done = 0
            while done < args.jobs:
                got = await broker.claim(["bench"], "raw", args.claim, 60.0)
                if not got:
                    raise RuntimeError(f"queue ran dry after {done} of {args.jobs} jobs")
                await broker.settle([Ack(d, b"null") for d in got])
                done += len(got)

        enq = await timed(enqueue_all, args.jobs)
        drn = await timed(drain, args.jobs)
        return enq, drn
    finally:
        await broker.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)


def show(label: str, phases: list[Phase]) -> None:
    rates = [p.rate for p in phases]
    cpus = [p.cpu_us for p in phases]
    runs = "  ".join(f"{r:,.0f}" for r in rates)
    print(
        f"{label:<22} median {statistics.median(rates):>9,.0f} jobs/s  "
        f"{statistics.median(cpus):6.1f} us CPU/job   (runs: {runs})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL", "EXTRA"])
    ap.add_argument("--enqueue-batch", type=int, default=1000)
    ap.add_argument("--claim", type=int, default=100)
    ap.add_argument("--delayed", type=int, default=0)
    ap.add_argument("--dir", default=None, help="where the database files go (a real disk)")
    args = ap.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="offload-raw-")
    print(
        f"SQLite broker raw loop: {args.jobs:,} jobs, enqueue batches of {args.enqueue_batch}, "
        f"claim/ack {args.claim} at a time, synchronous={args.sync}, "
        f"{args.delayed:,} delayed jobs beside, files in {folder}"
    )
    enqs, drains = [], []
    for _ in range(args.runs):
        enq, drn = asyncio.run(one_run(args, folder))
        enqs.append(enq)
        drains.append(drn)
    show("enqueue (batched)", enqs)
    show("claim + ack drain", drains)


if __name__ == "__main__":
    main()
