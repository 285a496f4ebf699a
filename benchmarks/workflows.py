"""Workflow and scheduler overheads per backend (median of several runs).

    python benchmarks/workflows.py [--runs 3] [--backends memory,sqlite,redis,postgres]

* chord: a chord of 1,000 ``add`` jobs and a ``total`` callback, on one worker with 50
  slots: the time from enqueue to the callback's result, and how long after the last
  member finished the callback finished (the chord joins' latency);
* chain hop: a chain of 100 steps, seconds per step (one ack + follow-up each);
* scheduler step: one ``Scheduler.step()`` while leading with 100 ``every`` schedules and
  nothing due (the idle cost a leader pays each wake-up).

Uses the test backends (``tests/backends.py``: a private Redis prefix, a private
PostgreSQL schema, cleaned up after each run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backends import BACKENDS  # noqa: E402
from tests.integration import flowapps as fa  # noqa: E402

from offload import App  # noqa: E402
from offload.workflows import chain, chord, group  # noqa: E402


async def workflow_run(url: str) -> tuple[float, float, float]:
    fa.app._override = None
    fa.app.use_broker(url)
    worker = await fa.app.worker(queues=("wf",), concurrency=50, poll_s=0.05, lease_s=5)
    runner = asyncio.create_task(worker.run())
    try:
        t0 = time.perf_counter()
        flow = await chord(group(fa.add.s(i, i) for i in range(1000)), fa.total.s()).enqueue()
        await flow.result(timeout=300)
        elapsed = time.perf_counter() - t0
        broker = await fa.app.broker()
        members = await broker.get_jobs([f"{flow.id}.0.{i}" for i in range(1000)])
        callback = await broker.get_job(f"{flow.id}.1")
        assert callback is not None and callback.finished_at is not None
        lag = callback.finished_at - max(m.finished_at or 0.0 for m in members if m)
        t1 = time.perf_counter()
        steps = await chain(fa.add.s(0, 1), *[fa.add.s(1) for _ in range(99)]).enqueue()
        assert await steps.result(timeout=300) == 100
        hop = (time.perf_counter() - t1) / 100
    finally:
        worker.stop()
        await runner
        await fa.app.close()
    return elapsed, lag, hop


async def scheduler_step(url: str) -> float:
    app = App(url)
    for i in range(100):
        app.every(seconds=3600, name=f"bench.s{i}")(_noop_for(i))
    try:
        scheduler = app.scheduler(await app.broker())
        await scheduler.step()
        t0 = time.perf_counter()
        for _ in range(50):
            await scheduler.step()
        return (time.perf_counter() - t0) / 50
    finally:
        await app.close()


def _noop_for(i: int):  # type: ignore[no-untyped-def]
    async def noop() -> None: ...

    noop.__qualname__ = noop.__name__ = f"noop{i}"
    return noop


async def one(name: str, tmp: Path) -> tuple[float, float, float, float]:
    backend = BACKENDS[name]
    reason = await backend.check()
    if reason:
        raise SystemExit(reason)
    urls = [backend.make_url(tmp, uuid.uuid4().hex[:10]) for _ in range(2)]
    urls = [f"memory://{uuid.uuid4().hex[:8]}" if u == "memory://" else u for u in urls]
    try:
        elapsed, lag, hop = await workflow_run(urls[0])
        step = await scheduler_step(urls[1])
    finally:
        for url in urls:
            await backend.cleanup(url)
    return elapsed, lag, hop, step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="memory,sqlite,redis,postgres")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    for name in args.backends.split(","):
        runs = [asyncio.run(one(name, tmp)) for _ in range(args.runs)]
        chord_s, lag, hop, step = (statistics.median(r[i] for r in runs) for i in range(4))
        print(
            f"{name:9s} chord(1000): {chord_s:5.2f} s, callback {lag * 1000:4.0f} ms after "
            f"the last member | chain hop {hop * 1000:4.1f} ms | idle scheduler step "
            f"(100 schedules) {step * 1000:5.2f} ms"
        )


if __name__ == "__main__":
    main()
