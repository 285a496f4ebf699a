"""G8: bounded memory under back pressure, measured on real processes (RSS from /proc).

* **Delayed jobs stay in the backend.** 100,000 jobs due in an hour are enqueued while a
  real ``offload worker`` serves the queue; its RSS, sampled before, while they are
  written and while it keeps serving other jobs beside them, rises by at most 50 MiB (it
  never loads what is not due: no ETA prefetch, celery#978 / #9849).
* **A fast producer against a slow worker, with a bounded queue** (``max_depth`` and
  ``when_full="block"``): the producer slows to the worker's pace, the queue never
  exceeds its bound, the worker never holds more than its slots, and both processes'
  RSS stay flat: the least-squares slope of each, after warm-up, is under 200 KiB/s.

Run as ``python -m tests.faults.test_fault_memory URL COUNT`` this module is that
producer (a process of its own, so its memory is measured alone).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from offload.brokers import open_broker
from tests.acceptance.harness import ROOT, env_for
from tests.faults.harness import LONG, scale
from tests.faults.harness import probe as probe_app
from tests.faults.harness.checker import History
from tests.faults.harness.processes import FaultRun
from tests.faults.harness.producer import produce

if TYPE_CHECKING:
    from offload.brokers.base import StateCounts
    from tests.faults.harness.fixtures import FaultBackend

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
DELAYED = 100_000
DELAYED_GROWTH_MIB = 50  # G8
BOUND = 100
FLAT_SLOPE = 200 * 1024  # bytes per second


def rss(pid: int) -> int | None:
    """The resident set size of process ``pid``, in bytes (``None`` once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None  # a zombie: exited, not yet reaped


class Sampler:
    """Samples the RSS of some processes every ``every`` seconds in a thread."""

    def __init__(self, pids: dict[str, int], every: float = 0.2) -> None:
        self.pids = pids
        self.every = every
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, pid in self.pids.items():
                value = rss(pid)
                if value is not None:
                    self.samples[name].append((now, value))
            self._stop.wait(self.every)

    def peak(self, name: str) -> int:
        return max(v for _, v in self.samples[name])

    def slope(self, name: str, skip_s: float) -> float:
        """Least-squares bytes per second after the first ``skip_s`` seconds."""
        points = self.samples[name]
        start = points[0][0] + skip_s
        xs, ys = zip(*[(t, v) for t, v in points if t >= start], strict=True)
        return statistics.linear_regression(xs, ys).slope


def _worker_rss_settled(pid: int) -> int:
    """A worker's RSS once it has stopped moving (the median of a few samples)."""
    samples = []
    for _ in range(5):
        value = rss(pid)
        assert value is not None, f"worker {pid} exited"
        samples.append(value)
        time.sleep(0.1)
    return int(statistics.median(samples))


# --------------------------------------------------------------------------- delayed jobs


async def _enqueue_delayed(url: str, history: History, n: int) -> list[str]:
    calls = [{"n": i} for i in range(n)]
    return await produce(url, history, calls, batch=5000, options={"delay": 3600})


@pytest.mark.timeout(900 if LONG else 150)
def test_a_hundred_thousand_delayed_jobs_stay_out_of_the_worker(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    url = fault_backend.url
    with FaultRun(url, tmp_path, lease_s=5.0, concurrency=10) as run:
        worker = run.start_worker()
        run.wait_ready(worker)
        assert run.wait_final(run.enqueue(200, seconds=0.005), timeout=60)  # warm up
        baseline = _worker_rss_settled(worker.pid)
        with Sampler({"worker": worker.pid}) as sampler:
            delayed = asyncio.run(_enqueue_delayed(url, run.history, DELAYED))
            # The worker keeps serving its queue beside them (several claim rounds).
            for _ in range(scale(3, 10)):
                assert run.wait_final(run.enqueue(300, seconds=0.005), timeout=60)
        after = _worker_rss_settled(worker.pid)
        stats = asyncio.run(_counts(url))
        assert worker.alive()
        run.stop_workers()

    growth = max(sampler.peak("worker"), after) - baseline
    print(
        f"\n[delayed jobs, {fault_backend.name}] {len(delayed):,} waiting: worker RSS "
        f"{baseline / MIB:.1f} MiB before, peak {sampler.peak('worker') / MIB:.1f} MiB, "
        f"{after / MIB:.1f} MiB after (+{growth / MIB:.1f} MiB)"
    )
    assert len(delayed) == DELAYED
    assert stats.scheduled == DELAYED, "every delayed job is still waiting in the backend"
    assert growth <= DELAYED_GROWTH_MIB * MIB


async def _counts(url: str) -> StateCounts:
    broker = open_broker(url)
    await broker.open()
    try:
        [stats] = await broker.stats([probe_app.QUEUE])
        return stats.counts
    finally:
        await broker.close()


# --------------------------------------------------------------------------- back pressure


async def _produce_bounded(url: str, count: int) -> None:
    """Enqueue ``count`` probe jobs as fast as a bounded, blocking queue lets us."""
    app = probe_app.app
    app.use_broker(url)
    app.queue(probe_app.QUEUE, max_depth=BOUND, when_full="block", block_timeout=120)
    try:
        for i in range(0, count, 10):
            await probe_app.probe.enqueue_many([(i + j, "ok", 0.01) for j in range(10)])
    finally:
        await app.close()


@pytest.mark.timeout(600 if LONG else 120)
def test_a_fast_producer_and_a_slow_worker_stay_flat_behind_a_bounded_queue(
    fault_backend: FaultBackend, tmp_path: Path
) -> None:
    url = fault_backend.url
    count = scale(1000, 20000)
    concurrency = 2
    with FaultRun(url, tmp_path, lease_s=5.0, concurrency=concurrency) as run:
        worker = run.start_worker()
        run.wait_ready(worker)
        producer = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.test_fault_memory", url, str(count)],
            env=env_for(url),
            cwd=ROOT,
            stderr=subprocess.PIPE,
        )
        depths: list[tuple[int, int]] = []
        with Sampler({"worker": worker.pid, "producer": producer.pid}) as sampler:
            while producer.poll() is None:
                counts = asyncio.run(_counts(url))
                depths.append((counts.pending, counts.running))
                time.sleep(0.5)
        _, err = producer.communicate()
        assert producer.returncode == 0, err.decode()[-2000:]
        elapsed = sampler.samples["worker"][-1][0] - sampler.samples["worker"][0][0]
        assert worker.alive()
        run.stop_workers()

    slopes = {name: sampler.slope(name, skip_s=3.0) for name in ("worker", "producer")}
    print(
        f"\n[bounded queue, {fault_backend.name}] {count} jobs in {elapsed:.1f}s "
        f"({count / elapsed:.0f}/s), deepest {max(p for p, _ in depths)} of {BOUND}; RSS slope "
        + ", ".join(f"{n} {s / 1024:+.1f} KiB/s" for n, s in slopes.items())
        + "; peak "
        + ", ".join(f"{n} {sampler.peak(n) / MIB:.1f} MiB" for n in slopes)
    )
    assert elapsed > 5, "the producer was not held back: the test measured nothing"
    assert all(p <= BOUND for p, _ in depths), "the bound was overshot"
    assert all(r <= concurrency for _, r in depths), "the worker held more than its slots"
    for name, slope in slopes.items():
        assert abs(slope) <= FLAT_SLOPE, f"{name} RSS grows {slope / 1024:.0f} KiB/s"


if __name__ == "__main__":
    asyncio.run(_produce_bounded(sys.argv[1], int(sys.argv[2])))
