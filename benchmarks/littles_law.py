"""Validate offload's Little's-Law analytics against queueing theory (M/M/c, Erlang C).

    python benchmarks/littles_law.py [--broker URL] [--lam 56] [--service 0.05] [--slots 4]
                                     [--warmup 20] [--duration 120] [--runs 3]

A producer enqueues jobs at Poisson times (rate λ, fixed) whose service times are drawn
from an exponential distribution with mean S; one worker runs them on c slots. After a
warm-up, offload's analytics (``offload.metrics.littles_law.Analytics``, the code behind
``app.stats()``) measure the window. The check is against the textbook M/M/c values,
computed here from λ, S and c alone (not with offload's own queueing module):

* measured W (mean time in system) and L (time-averaged jobs in system) within 15 % of
  the Erlang C values;
* measured L within 10 % of measured λ·W (Little's Law on the measurements).

Prints every run and the medians; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offload import App  # noqa: E402
from offload.metrics.littles_law import Analytics  # noqa: E402


@dataclass(frozen=True)
class Theory:
    """The M/M/c steady state, from the textbook closed form."""

    p_wait: float
    wq: float
    w: float
    lq: float
    l: float  # noqa: E741

    @classmethod
    def mmc(cls, lam: float, service_s: float, c: int) -> Theory:
        a = lam * service_s  # offered load, in Erlangs
        if a >= c:
            raise SystemExit(f"λS = {a:.2f} >= c = {c}: no steady state; lower --lam")
        tail = a**c / math.factorial(c) * c / (c - a)
        p_wait = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
        wq = p_wait * service_s / (c - a)  # = C / (cμ - λ)
        w = wq + service_s
        return cls(p_wait, wq, w, lam * wq, lam * w)


@dataclass(frozen=True)
class Measured:
    jobs: int
    window_s: float
    lam: float
    x: float
    l: float  # noqa: E741
    w: float
    wait: float
    service: float
    utilisation: float

    @property
    def little_error(self) -> float:
        return abs(self.l - self.lam * self.w) / self.l


async def measure(
    url: str,
    *,
    lam: float,
    service_s: float,
    slots: int,
    warmup_s: float,
    duration_s: float,
    seed: int,
) -> Measured:
    """One run: Poisson arrivals, exponential service, c slots; measure after the warm-up."""
    app = App(url)

    @app.task(name="mmc.serve", queue="mmc")
    async def serve(seconds: float) -> None:
        await asyncio.sleep(seconds)

    rng = random.Random(seed)
    analytics = Analytics(min_span_s=0.0, history_s=warmup_s + duration_s + 60)
    worker = await app.worker(queues=("mmc",), concurrency=slots, poll_s=0.1)
    running = asyncio.create_task(worker.run())
    broker = await app.broker()
    loop = asyncio.get_running_loop()
    start = next_at = loop.time()
    opened = False
    try:
        while True:
            next_at += rng.expovariate(lam)
            if next_at >= start + warmup_s + duration_s:
                break
            if not opened and next_at >= start + warmup_s:
                await analytics.sample(broker)  # the measured window opens
                opened = True
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await serve.enqueue(rng.expovariate(1.0 / service_s))
        await asyncio.sleep(max(0.0, start + warmup_s + duration_s - loop.time()))
        report = await analytics.report(broker, window_s=duration_s + 1, queues=["mmc"])
    finally:
        worker.stop(grace_s=5)
        await running
        await app.close()
    q = report.queue("mmc")
    assert q is not None and q.time_in_system_s is not None and q.jobs_in_system is not None
    return Measured(
        jobs=q.finished,
        window_s=report.window_s,
        lam=q.arrival_rate or 0.0,
        x=q.completion_rate or 0.0,
        l=q.jobs_in_system,
        w=q.time_in_system_s,
        wait=q.mean_wait_s or 0.0,
        service=q.mean_service_s or 0.0,
        utilisation=q.utilisation or 0.0,
    )


def rel(measured: float, expected: float) -> float:
    return (measured - expected) / expected


def report(runs: list[Measured], theory: Theory, lam: float, service_s: float, c: int) -> bool:
    print(
        f"M/M/{c}: λ={lam}/s, S={service_s}s, rho={lam * service_s / c:.2f}, "
        f"P(wait)={theory.p_wait:.3f}"
    )
    header = f"{'run':>4} {'jobs':>6} {'λ/s':>7} {'L':>7} {'W ms':>8} {'Wq ms':>7} {'S ms':>6}"
    print(header + f" {'util':>5} {'W err':>7} {'L err':>7} {'L-λW':>6}")
    for i, m in enumerate(runs, 1):
        print(
            f"{i:>4} {m.jobs:>6} {m.lam:>7.2f} {m.l:>7.3f} {m.w * 1e3:>8.1f} "
            f"{m.wait * 1e3:>7.1f} {m.service * 1e3:>6.1f} {m.utilisation:>5.2f} "
            f"{rel(m.w, theory.w):>+7.1%} {rel(m.l, theory.l):>+7.1%} {m.little_error:>6.1%}"
        )
    med_w = statistics.median(m.w for m in runs)
    med_l = statistics.median(m.l for m in runs)
    med_little = statistics.median(m.little_error for m in runs)
    print(
        f"theory      {lam:>7.2f} {theory.l:>7.3f} {theory.w * 1e3:>8.1f} "
        f"{theory.wq * 1e3:>7.1f} {service_s * 1e3:>6.1f}"
    )
    print(
        f"median      W {med_w * 1e3:.1f} ms ({rel(med_w, theory.w):+.1%}), "
        f"L {med_l:.3f} ({rel(med_l, theory.l):+.1%}), |L - λW|/L {med_little:.1%}"
    )
    ok = all(
        abs(rel(m.w, theory.w)) <= 0.15
        and abs(rel(m.l, theory.l)) <= 0.15
        and m.little_error <= 0.10
        for m in runs
    )
    print("PASS: W and L within 15% of Erlang C, L within 10% of λW" if ok else "FAIL")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="memory://")
    parser.add_argument("--lam", type=float, default=56.0, help="arrivals per second (λ)")
    parser.add_argument("--service", type=float, default=0.05, help="mean service time (S)")
    parser.add_argument("--slots", type=int, default=4, help="worker slots (c)")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    theory = Theory.mmc(args.lam, args.service, args.slots)
    runs = []
    for i in range(args.runs):
        runs.append(
            asyncio.run(
                measure(
                    args.broker,
                    lam=args.lam,
                    service_s=args.service,
                    slots=args.slots,
                    warmup_s=args.warmup,
                    duration_s=args.duration,
                    seed=args.seed + i,
                )
            )
        )
    sys.exit(0 if report(runs, theory, args.lam, args.service, args.slots) else 1)


if __name__ == "__main__":
    main()
