"""Child processes for the SQLite broker's multi-process tests.

    python -m tests.integration.sqlite_child worker URL OUT_JSON
    python -m tests.integration.sqlite_child waiter URL COUNT
    python -m tests.integration.sqlite_child enqueue-and-die URL JOB_ID

Each opens its own broker on the shared file, as separate worker processes do.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from offload.brokers.base import Ack, EnqueueRequest
from offload.brokers.sqlite import SqliteBroker


async def worker(url: str, out: str) -> None:
    """Claim and ack from queue "mp" until the parent sets kv "stop"; report what was acked."""
    broker = SqliteBroker(url)
    await broker.open()
    acked: list[str] = []
    refused = 0
    me = f"w{os.getpid()}"
    try:
        while True:
            got = await broker.claim(["mp"], me, 7, lease_s=120.0, wait_s=0.05)
            if got:
                answers = await broker.settle([Ack(d, me.encode()) for d in got])
                acked += [d.job_id for d, ok in zip(got, answers, strict=True) if ok]
                refused += answers.count(False)
            elif await broker.kv_get("stop"):
                break
    finally:
        await broker.close()
    with open(out, "w") as f:
        json.dump({"acked": acked, "refused": refused}, f)


async def waiter(url: str, count: int) -> None:
    """Claim jobs one at a time, printing each job's payload and the instant it was claimed."""
    broker = SqliteBroker(url)
    await broker.open()
    try:
        print("ready", flush=True)
        claimed = 0
        while claimed < count:
            got = await broker.claim(["lat"], "waiter", 1, 30.0, wait_s=10.0)
            now = time.time()
            for d in got:
                print(d.payload.decode(), f"{now:.6f}", flush=True)
                await broker.ack(d)
            claimed += len(got)
    finally:
        await broker.close()


async def enqueue_and_die(url: str, job_id: str) -> None:
    """Enqueue one job, say so, then die by SIGKILL before anything else can run."""
    broker = SqliteBroker(url)
    await broker.open()
    req = EnqueueRequest(id=job_id, queue="q", name="t", payload=b"p", enqueued_at=time.time())
    [out] = await broker.enqueue([req])
    print(out.status, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    cmd, url, arg = sys.argv[1:4]
    if cmd == "worker":
        asyncio.run(worker(url, arg))
    elif cmd == "waiter":
        asyncio.run(waiter(url, int(arg)))
    elif cmd == "enqueue-and-die":
        asyncio.run(enqueue_and_die(url, arg))
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
