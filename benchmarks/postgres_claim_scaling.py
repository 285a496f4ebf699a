"""Does claim time stay flat as the PostgreSQL queue grows?

    python benchmarks/postgres_claim_scaling.py [--url postgresql://postgres@127.0.0.1/test]
        [--sizes 1000,100000,1000000] [--delayed 1000000] [--claims 200] [--claim 100]

For each size, the queue is filled to that many queued jobs, vacuumed and analysed (what
autovacuum does; it is off on some servers), and then timed over ``--claims`` rounds of:
claim ``--claim`` jobs, release them (so the depth stays the same). It reports the median
and p90 claim latency per size and the ratio of the largest median to the smallest
(target: within 2x). A last run holds 1,000 queued jobs behind ``--delayed`` jobs
scheduled an hour ahead, to show that delayed jobs do not slow claims either. Each
scenario uses a private schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import psycopg  # noqa: E402

from offload.brokers.base import EnqueueRequest, Release  # noqa: E402
from offload.brokers.postgres import PostgresBroker  # noqa: E402

PAYLOAD = b'{"v":1,"args":[12345],"kwargs":{"to":"someone@example.com"}}' + b" " * 100
FILL_BATCH = 5_000


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def fill(broker: PostgresBroker, n: int, eta: float | None = None) -> None:
    for start in range(0, n, FILL_BATCH):
        now = time.time()
        await broker.enqueue(
            [
                EnqueueRequest(
                    id=uuid.uuid4().hex,
                    queue="bench",
                    name="bench.noop",
                    payload=PAYLOAD,
                    enqueued_at=now,
                    eta=eta,
                )
                for _ in range(min(FILL_BATCH, n - start))
            ]
        )


async def vacuum(url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'VACUUM ANALYZE "{schema}".jobs'.encode())


async def measure(broker: PostgresBroker, claims: int, limit: int) -> list[float]:
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        got = await broker.claim(["bench"], "w", limit, 60.0)
        times.append(time.perf_counter() - started)
        assert len(got) == limit, f"claimed {len(got)} of {limit}"
        await broker.settle([Release(d) for d in got])
    return times


async def scenario(
    args: argparse.Namespace, label: str, steps: list[tuple[int, float | None]]
) -> dict[str, list[float]]:
    """Grow one queue through ``steps`` (count, eta), measuring after each queued step."""
    schema = f"offload_scale_{uuid.uuid4().hex[:8]}"
    broker = PostgresBroker(with_schema(args.url, schema))
    await broker.open()
    results: dict[str, list[float]] = {}
    try:
        queued = delayed = 0
        for count, eta in steps:
            await fill(broker, count, eta)
            if eta is None:
                queued += count
            else:
                delayed += count
                continue
            await vacuum(args.url, schema)
            name = f"{label}{queued:>9,} queued" + (f" + {delayed:,} delayed" if delayed else "")
            results[name] = await measure(broker, args.claims, args.claim)
            report(name, results[name])
    finally:
        await broker.close()
        async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
    return results


def report(name: str, times: list[float]) -> None:
    q = statistics.quantiles(times, n=10)
    print(
        f"  {name:<40} median {statistics.median(times) * 1e3:6.2f} ms   p90 {q[-1] * 1e3:6.2f} ms",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--delayed", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--claim", type=int, default=100)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"claim {args.claim} then release them, {args.claims} times per size")
    steps: list[tuple[int, float | None]] = []
    previous = 0
    for size in sizes:
        steps.append((size - previous, None))
        previous = size
    results = await scenario(args, "", steps)
    if args.delayed:
        later = time.time() + 3600
        results |= await scenario(args, "", [(args.delayed, later), (1_000, None)])
    medians = [statistics.median(t) for t in results.values()]
    print(f"max/min median claim latency: {max(medians) / min(medians):.2f}x (target <= 2x)")


if __name__ == "__main__":
    asyncio.run(main())
