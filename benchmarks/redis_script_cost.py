"""Redis server time per job of the Redis broker's hot scripts, on a private redis-server.

Per phase (enqueue in batches of 100, one-job enqueues, claim 100 at a time until empty,
ack 100 at a time) the server's own accounting (``CONFIG RESETSTAT`` then
``INFO commandstats``) gives the µs spent in the script calls (EVALSHA or FCALL, the
commands they issue included) and, separately, in the commands the scripts issue; the
difference is the Lua itself. Beside them, the server's CPU time (``INFO cpu``: network
and parsing too, and blind to time the server waited for a core on a busy machine).
Reported per job, median of several runs.

``--src`` runs another checkout's broker (for before/after comparisons in one window);
``--scripts eval`` forces the EVALSHA path where the broker has one; ``--detail`` prints
each command's calls and µs per job; ``--port`` uses a private server already running
(it is flushed), e.g. to attach a profiler to it.

    .venv/bin/python benchmarks/redis_script_cost.py [--jobs 20000] [--runs 5] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

BATCH = 100
PAYLOAD = b"x" * 120
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "evalsha_ro", "fcall_ro")
IGNORED = ("config|resetstat", "info", "config", "ping", "flushall", "script|load", "function|load")


async def stats(client: aioredis.Redis) -> tuple[float, float, dict[str, tuple[int, int]]]:
    """µs in script calls and µs in the commands that ran inside them, since RESETSTAT,
    and each command's calls and µs."""
    info: dict[str, Any] = await client.info("commandstats")
    scripts = inner = 0.0
    each = {}
    for name, row in info.items():
        cmd = name.removeprefix("cmdstat_")
        if cmd in SCRIPT_COMMANDS:
            scripts += row["usec"]
        elif cmd not in IGNORED:
            inner += row["usec"]
        each[cmd] = (row["calls"], row["usec"])
    return scripts, inner, each


async def server_cpu(client: aioredis.Redis) -> float:
    """The server's CPU seconds so far (unlike commandstats, blind to time it waited)."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Phase:
    """Server µs (scripts, inner commands) and wall time of one phase."""

    def __init__(
        self, client: aioredis.Redis, rows: dict[str, list[tuple[float, ...]]], detail: bool
    ) -> None:
        self.client, self.rows, self.detail = client, rows, detail

    def __call__(self, name: str, jobs: int) -> Phase:
        self.name, self.jobs = name, jobs
        return self

    async def __aenter__(self) -> None:
        await self.client.config_resetstat()
        self.cpu0 = await server_cpu(self.client)
        self.t0 = time.perf_counter()

    async def __aexit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        cpu = await server_cpu(self.client) - self.cpu0
        scripts, inner, each = await stats(self.client)
        n = self.jobs
        row = (scripts / n, inner / n, (scripts - inner) / n, cpu / n * 1e6, n / wall)
        self.rows.setdefault(self.name, []).append(row)
        if self.detail:
            print(
                self.name, " ".join(f"{c}={k / n:.2f}x/{u / n:.2f}µs" for c, (k, u) in each.items())
            )


async def run_once(
    client: aioredis.Redis, url: str, n: int, singles: int, rows: Any, detail: bool
) -> None:
    from offload.brokers.base import Ack, EnqueueRequest
    from offload.brokers.redis import RedisBroker

    broker = RedisBroker(f"{url}prefix=bench:{uuid.uuid4().hex[:8]}")
    await broker.open()
    now = time.time()
    reqs = [
        EnqueueRequest(id=f"j{i}", queue="bench", name="task", payload=PAYLOAD, enqueued_at=now)
        for i in range(n + singles)
    ]
    phase = Phase(client, rows, detail)
    async with phase("enqueue x100", n):
        for i in range(0, n, BATCH):
            await broker.enqueue(reqs[i : i + BATCH])
    async with phase("enqueue x1", singles):
        for r in reqs[n:]:
            await broker.enqueue([r])
    got = []
    async with phase("claim x100", n + singles):
        while batch := await broker.claim(["bench"], "w", BATCH, 600):
            got.append(batch)
    async with phase("ack x100", n + singles):
        for batch in got:
            ok = await broker.settle([Ack(d, b"ok") for d in batch])
            assert all(ok)
    await broker.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(
    n: int, singles: int, runs: int, scripts: str | None, detail: bool, own_port: int
) -> None:
    logging.getLogger("offload.brokers.redis").setLevel(logging.ERROR)
    port = own_port or free_port()
    workdir = tempfile.mkdtemp(prefix="offload-bench-")
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]
    server = subprocess.Popen(["true"] if own_port else cmd, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0?" + (f"scripts={scripts}&" if scripts else "")
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except (aioredis.ConnectionError, OSError):
                await asyncio.sleep(0.05)
        rows: dict[str, list[tuple[float, ...]]] = {}
        for _ in range(runs):
            await client.flushall()
            await run_once(client, url, n, singles, rows, detail)
    finally:
        await client.aclose()
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    import offload

    print(f"offload from {Path(offload.__file__).parent}")
    print(f"{n} jobs (+{singles} one-job enqueues), median of {runs} runs, µs of Redis per job")
    print(f"{'phase':<14}{'script µs':>10}{'commands':>10}{'Lua':>8}{'CPU µs':>8}{'jobs/s':>10}")
    for name, samples in rows.items():
        m = [statistics.median(col) for col in zip(*samples, strict=True)]
        print(f"{name:<14}{m[0]:>10.1f}{m[1]:>10.1f}{m[2]:>8.1f}{m[3]:>8.1f}{m[4]:>10,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--scripts", choices=("functions", "eval"), default=None)
    parser.add_argument("--port", type=int, default=0, help="use this running server instead")
    parser.add_argument("--detail", action="store_true", help="each command's calls and µs")
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    importlib.invalidate_caches()
    asyncio.run(main(args.jobs, args.singles, args.runs, args.scripts, args.detail, args.port))
