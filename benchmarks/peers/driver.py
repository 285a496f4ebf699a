"""One system, one run: enqueue, drain and latency phases; prints one JSON line.

    <venv>/bin/python benchmarks/peers/driver.py '<json config>'

Run by ``benchmarks/compare.py`` in the system's own virtualenv, from this directory (so the
worker imports ``sys_<name>`` and ``record``). The system's adapter module ``sys_<name>``
provides ``SETTINGS`` (its concurrency, as documented), ``worker_cmd()``, a ``Producer``
with ``enqueue(i)`` and optionally ``enqueue_batch(indices)`` (sync or async, plus optional
``open``/``close``), and optionally ``setup()``. The no-op task of every system is
``record.record(i)``.

Phases (job indices never repeat, so each phase's records are told apart):
1. enqueue, one at a time: jobs 0..K-1 (K = min(2,000, N/2)), timed;
2. enqueue in batches of 1,000: jobs K..N-1, timed when the system has batch enqueue
   (otherwise enqueued one at a time and not reported);
3. drain: the worker process starts on the backlog of N jobs; rate = N / (last record -
   first record); worker CPU = the worker tree's CPU between the moment the first record
   appears and the moment the N-th does (polled every 5 ms, ~1 µs/job of error at N=20,000);
4. latency: an open-loop producer sends job j at t0 + j/rate whatever earlier sends are
   doing (a task per arrival, or a thread pool for a sync client, at most 32 sends in
   flight either way); latency = the task's recorded start - the scheduled instant, so a
   slow enqueue is counted, not hidden.
   The first 0.5 s are a warm-up and not counted.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import procs
import record

HERE = Path(__file__).resolve().parent
BATCH = 1000
IN_FLIGHT = 32  # sends at once in the latency phase, async or threaded: the same for all


@dataclass
class Config:
    system: str
    work: str  # a temp dir of this run (record file, logs, SQLite file)
    jobs: int = 20_000
    rate: float = 500.0
    seconds: float = 6.0
    drain_timeout: float = 300.0
    redis_url: str = ""
    pg_url: str = ""  # the maintenance database: this run gets a fresh database beside it
    pg_db: str = "peers_bench"


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def reset_servers(cfg: Config) -> None:
    """A clean slate: FLUSHALL on the private Redis, a fresh ``bench`` PostgreSQL database."""
    if cfg.redis_url:
        import redis

        client = redis.Redis.from_url(cfg.redis_url)
        client.flushall()
        client.close()
    if cfg.pg_url:
        import psycopg

        with psycopg.connect(cfg.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{cfg.pg_db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{cfg.pg_db}"')
        os.environ["PEERS_PG_URL"] = cfg.pg_url.rsplit("/", 1)[0] + "/" + cfg.pg_db


def drop_database(cfg: Config) -> None:
    if cfg.pg_url:
        import psycopg

        with psycopg.connect(cfg.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{cfg.pg_db}" WITH (FORCE)')


async def enqueue_phases(producer: Any, cfg: Config) -> tuple[float, float | None]:
    k = min(2000, cfg.jobs // 2)
    t = time.perf_counter()
    for i in range(k):
        await maybe_await(producer.enqueue(i))
    single = k / (time.perf_counter() - t)
    batch_fn = getattr(producer, "enqueue_batch", None)
    t = time.perf_counter()
    for start in range(k, cfg.jobs, BATCH):
        chunk = list(range(start, min(cfg.jobs, start + BATCH)))
        if batch_fn is not None:
            await maybe_await(batch_fn(chunk))
        else:
            for i in chunk:
                await maybe_await(producer.enqueue(i))
    batch = (cfg.jobs - k) / (time.perf_counter() - t) if batch_fn is not None else None
    return single, batch


def drain(cfg: Config, worker: Any, path: str) -> dict[str, float]:
    def size() -> int:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode} during the drain")
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    if not procs.wait_until(lambda: size() > 0, cfg.drain_timeout):
        raise RuntimeError("no job started within the drain timeout")
    cpu0 = procs.tree_cpu(worker.pid)
    deadline = time.monotonic() + cfg.drain_timeout
    need = cfg.jobs * record.RECORD.size
    missing = cfg.jobs
    while missing:
        if not procs.wait_until(lambda n=need: size() >= n, deadline - time.monotonic()):
            ran = sum(1 for i in record.read(path) if i < cfg.jobs)
            raise RuntimeError(f"drain timed out: {ran} of {cfg.jobs} jobs ran")
        cpu1 = procs.tree_cpu(worker.pid)
        done = [t for i, t in record.read(path).items() if i < cfg.jobs]
        missing = cfg.jobs - len(done)
        need = size() + missing * record.RECORD.size  # a job run twice wrote twice: wait on
    span = max(done) - min(done)
    return {"drain": cfg.jobs / span, "cpu_us": (cpu1 - cpu0) / cfg.jobs * 1e6}


async def open_loop(producer: Any, cfg: Config, path: str) -> dict[str, float]:
    """Send job ``base + j`` at ``t0 + j / rate``; latency = recorded start - that instant."""
    base, n = cfg.jobs, int(cfg.rate * cfg.seconds)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(IN_FLIGHT)
    slots = asyncio.Semaphore(IN_FLIGHT)
    is_async = inspect.iscoroutinefunction(producer.enqueue)
    pending: set[Any] = set()
    sent: dict[int, float] = {}  # when each send returned: is the producer keeping up?

    async def send(i: int) -> None:
        async with slots:
            await producer.enqueue(i)
        sent[i] = time.time()

    def send_sync(i: int) -> None:
        producer.enqueue(i)
        sent[i] = time.time()

    t0 = time.time() + 0.2
    for j in range(n):
        delay = t0 + j / cfg.rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if is_async:
            fut: Any = asyncio.ensure_future(send(base + j))
        else:
            fut = loop.run_in_executor(pool, send_sync, base + j)
        pending.add(fut)
        fut.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    pool.shutdown()
    need = (base + n) * record.RECORD.size  # every record so far: cheap to wait on
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.stat(path).st_size < need:
        await asyncio.sleep(0.05)
    runs = record.read(path)
    warm = int(cfg.rate * 0.5)
    waits = sorted(
        (runs[base + j] - (t0 + j / cfg.rate)) * 1000 for j in range(warm, n) if base + j in runs
    )
    if len(waits) < (n - warm) * 0.99:
        raise RuntimeError(f"latency phase: only {len(waits)} of {n - warm} jobs ran in time")
    sends = sorted((sent[base + j] - (t0 + j / cfg.rate)) * 1000 for j in range(warm, n))
    return {
        "p50_ms": statistics.median(waits),
        "p99_ms": _p99(waits),
        "lat_jobs": len(waits),
        "send_p50_ms": statistics.median(sends),
        "send_p99_ms": _p99(sends),
    }


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


async def run(cfg: Config) -> dict[str, Any]:
    await reset_servers(cfg)
    if cfg.redis_url:
        os.environ["PEERS_REDIS_URL"] = cfg.redis_url
    path = os.environ[record.ENV] = str(Path(cfg.work) / "records.bin")
    adapter = importlib.import_module(f"sys_{cfg.system}")
    if hasattr(adapter, "setup"):
        await maybe_await(adapter.setup())
    producer = adapter.Producer()
    await maybe_await(getattr(producer, "open", lambda: None)())
    out: dict[str, Any] = {"settings": adapter.SETTINGS}
    worker = None
    try:
        out["enqueue_one"], out["enqueue_batch"] = await enqueue_phases(producer, cfg)
        env = dict(os.environ, PYTHONPATH=str(HERE))
        log = Path(cfg.work) / "worker.log"
        worker = procs.start(adapter.worker_cmd(), env, str(HERE), log)
        out.update(drain(cfg, worker, path))
        await asyncio.sleep(0.5)
        out.update(await open_loop(producer, cfg, path))
    finally:
        if worker is not None:
            procs.stop(worker)
        await maybe_await(getattr(producer, "close", lambda: None)())
        drop_database(cfg)
    return out


def main() -> None:
    cfg = Config(**json.loads(sys.argv[1]))
    result = asyncio.run(run(cfg))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
