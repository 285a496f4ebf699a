"""Server instructions per job of the Redis broker's phases, counted by callgrind.

Timings on a shared machine move by 5-15 % from run to run; the instructions a private
``redis-server`` (run under ``valgrind --tool=callgrind``) executes per job do not (they
repeat within ~0.5 %), so small changes to the Lua scripts can be compared exactly. They
overweight printf-heavy code against table-heavy Lua: confirm a change with
``redis_script_cost.py`` before keeping it.

Phases: enqueue in batches of 100, one-job enqueues, claim 100 at a time, ack 100 at a
time. Needs ``valgrind`` (``apt-get install valgrind``).

    .venv/bin/python benchmarks/redis_script_instructions.py [--jobs 2000] [--src DIR]
        [--scripts eval] [--keep DIR]   (--keep: the callgrind dumps, for callgrind_annotate)
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

BATCH = 100
SINGLES = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def last_total(folder: str) -> int:
    dump = max(glob.glob(f"{folder}/callgrind.out.*"), key=os.path.getmtime)
    for line in Path(dump).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


async def run(n: int, scripts: str | None, keep: str | None) -> dict[str, float]:
    from offload.brokers.base import Ack, EnqueueRequest
    from offload.brokers.redis import RedisBroker

    port, folder = free_port(), tempfile.mkdtemp(prefix="offload-cg-")
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/callgrind.out.%p"]
    redis = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [*valgrind, *redis, "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = aioredis.Redis(port=port)
    for _ in range(400):
        try:
            await client.ping()
            break
        except (aioredis.ConnectionError, OSError):
            await asyncio.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0?prefix=b" + (f"&scripts={scripts}" if scripts else "")
    broker = RedisBroker(url)
    await broker.open()
    now = time.time()
    reqs = [
        EnqueueRequest(id=f"j{i}", queue="q", name="task", payload=b"x" * 120, enqueued_at=now)
        for i in range(n + SINGLES + 1)
    ]
    await broker.enqueue(reqs[-1:])  # warm up: the first call of each script
    await broker.settle([Ack(d, b"ok") for d in await broker.claim(["q"], "w", 1, 600)])
    per_job: dict[str, float] = {}

    async def phase(name: str, jobs: int, work: Any) -> Any:
        control(server.pid, "-z")
        out = await work
        control(server.pid, "-d")
        per_job[name] = last_total(folder) / jobs
        return out

    async def enqueue_batches() -> None:
        for i in range(0, n, BATCH):
            await broker.enqueue(reqs[i : i + BATCH])

    async def enqueue_singles() -> None:
        for r in reqs[n : n + SINGLES]:
            await broker.enqueue([r])

    async def claim() -> list[Any]:
        got = []
        while batch := await broker.claim(["q"], "w", BATCH, 600):
            got.append(batch)
        return got

    async def ack(got: list[Any]) -> None:
        for batch in got:
            assert all(await broker.settle([Ack(d, b"ok") for d in batch]))

    await phase("enqueue x100", n, enqueue_batches())
    await phase("enqueue x1", SINGLES, enqueue_singles())
    got = await phase("claim x100", n + SINGLES, claim())
    await phase("ack x100", n + SINGLES, ack(got))
    await broker.close()
    await client.aclose()
    server.terminate()
    server.wait()
    if keep:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(folder, keep)
    shutil.rmtree(folder, ignore_errors=True)
    return per_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--scripts", choices=("functions", "eval"), default=None)
    parser.add_argument("--keep", default=None)
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    logging.getLogger("offload.brokers.redis").setLevel(logging.ERROR)
    per_job = asyncio.run(run(args.jobs, args.scripts, args.keep))
    print("server instructions per job: " + ", ".join(f"{k} {v:,.0f}" for k, v in per_job.items()))


if __name__ == "__main__":
    main()
