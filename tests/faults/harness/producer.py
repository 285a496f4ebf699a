"""The producer: enqueues probe jobs with ids it chose, writing the history as it goes.

Each batch is written ``invoke`` (ids) before the call and ``ok`` / ``info`` / ``fail``
after it. Ids are chosen here, so an indeterminate batch (the connection broke, the
process was killed mid-call) is still known by id: if its jobs show up later they are
*recovered*, never *unexpected*. A batch that meets ``BrokerUnavailable`` is sent again
with the same ids until ``retry_s`` runs out (a stored id answers ``duplicate``, which
is an acknowledgement too).

In the test process: ``await produce(url, history, calls)``. As a process of its own (to
be killed mid-write, or to keep producing while a backend restarts)::

    python -m tests.faults.harness.producer URL HISTORY.jsonl --count 500 --batch 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload.errors import BrokerUnavailable
from tests.faults.harness import probe
from tests.faults.harness.checker import History

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["new_ids", "produce"]


def new_ids(n: int) -> list[str]:
    """Fresh job ids (a per-call prefix keeps them readable in reports)."""
    head = uuid.uuid4().hex[:6]
    return [f"{head}-{i:06d}" for i in range(n)]


async def produce(
    url: str,
    history: History,
    calls: Sequence[Mapping[str, Any]],
    *,
    task: str = "faults.probe",
    batch: int = 500,
    pace_s: float = 0.0,
    retry_s: float = 0.0,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Enqueue one probe job per mapping of keyword arguments; return the acknowledged ids.

    ``options`` are per-call options (``retries``, ``timeout``, ...) for every job.
    """
    app = probe.app
    app.use_broker(url)
    target = app.tasks[task]
    bound = dict(options or {})
    ids = new_ids(len(calls))
    acked: list[str] = []
    try:
        broker = await app.broker()
        for start in range(0, len(calls), batch):
            chunk = ids[start : start + batch]
            requests = [
                app._request(target, [], dict(kw), {**bound, "job_id": job_id})  # type: ignore[typeddict-item]
                for job_id, kw in zip(chunk, calls[start : start + batch], strict=True)
            ]
            history.enqueue("invoke", chunk)
            if await _send(broker, requests, chunk, history, retry_s):
                acked += chunk
            if pace_s:
                await asyncio.sleep(pace_s)
    finally:
        await app.close()
    return acked


async def _send(
    broker: Any, requests: list[Any], ids: list[str], history: History, retry_s: float
) -> bool:
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            outcomes = await broker.enqueue(requests)
        except BrokerUnavailable as exc:
            history.enqueue("info", ids, str(exc))
            if time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
            continue
        except Exception as exc:
            history.enqueue("info", ids, f"{type(exc).__name__}: {exc}")
            raise
        ok = [i for i, o in zip(ids, outcomes, strict=True) if o.status != "full"]
        full = [i for i, o in zip(ids, outcomes, strict=True) if o.status == "full"]
        history.enqueue("ok", ok)
        if full:
            history.enqueue("fail", full, "queue full")
        return not full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("history")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between batches")
    parser.add_argument("--retry", type=float, default=60.0, help="seconds to retry a batch")
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--seconds", type=float, default=0.05)
    args = parser.parse_args()
    history = History(Path(args.history))
    calls = [{"n": i, "mode": args.mode, "seconds": args.seconds} for i in range(args.count)]
    asyncio.run(
        produce(args.url, history, calls, batch=args.batch, pace_s=args.pace, retry_s=args.retry)
    )


if __name__ == "__main__":
    main()
