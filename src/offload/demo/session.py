"""What ``offload demo`` does: start the demo, then tour it, load it, or just serve it.

* ``offload demo``: start, place the tour's orders, then serve until Ctrl-C;
* ``offload demo --quick``: start, tour, stop (a one-minute look, and a smoke test);
* ``offload demo --load 200/s --for 30s``: start, drive both endpoints with the load
  generator (a separate process), print the comparison, stop;
* ``--target URL`` with ``--load``: drive a demo that is already running elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offload.demo.load import LoadPlan, drive_apart
from offload.demo.runner import DemoOptions, quiet_logs, running
from offload.demo.tour import tour
from offload.demo.views import banner, load_report, summary, tick_line

if TYPE_CHECKING:
    from rich.console import Console

    from offload.demo.runner import Demo

__all__ = ["Plan", "measure", "run"]


@dataclass(frozen=True)
class Plan:
    """What to do once the demo runs.

    Attributes:
        scenario: place the tour's orders first.
        quick: stop after the tour instead of serving until Ctrl-C.
        load: drive the endpoints with this plan, print the comparison, and stop.
        target: with ``load``, the URL of a demo already running (start none).
    """

    scenario: bool = True
    quick: bool = False
    load: LoadPlan | None = None
    target: str | None = None


def run(options: DemoOptions, plan: Plan, console: Console) -> int:
    """Run the demo as ``plan`` says; returns the process exit code."""
    quiet_logs()
    return asyncio.run(_main(options, plan, console))


async def _main(options: DemoOptions, plan: Plan, console: Console) -> int:
    stop = _stop_on_signals()
    if plan.load is not None and plan.target is not None:
        return await _race(measure(plan.target, plan.load, console), stop)
    console.rule("[bold]offload demo: a shop that answers at once, then works in the background")
    async with running(options) as demo:
        console.print(banner(demo))
        console.print()
        if plan.load is not None:
            code = await _race(measure(demo.shop_url, plan.load, console), stop)
            await _settle(demo, console)
            return code
        ok = True
        if plan.scenario:
            ok = bool(await _race(tour(demo, console), stop))
        if plan.quick:
            return 0 if ok else 1
        console.print(
            "\nLoad it from another terminal (both endpoints, side by side):\n"
            f"  offload demo --load 200/s --for 30s --target {demo.shop_url}\n"
            "\n[bold]Ctrl-C[/] stops everything."
        )
        await stop.wait()
        console.print("\nStopping: finishing running jobs...")
    return 0


async def _settle(demo: Demo, console: Console) -> None:
    """Say what the server is still doing for clients that gave up (the sync path's)."""
    if await demo.wait_idle(timeout_s=5.0):
        return
    console.print(
        f"\nThe server is still working on {demo.requests_in_flight():,} synchronous "
        "requests whose clients gave up long ago: stopping them."
    )


def _stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT/SIGTERM; a second one interrupts at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first(sig: signal.Signals) -> None:
        stop.set()
        loop.remove_signal_handler(sig)  # a second Ctrl-C gets Python's default

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, first, sig)
    return stop


async def _race(work: object, stop: asyncio.Event) -> int | bool:
    """Run ``work`` (a coroutine) until it ends or ``stop`` is set (then it is cancelled)."""
    task = asyncio.ensure_future(work)  # type: ignore[call-overload]
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 130
    result: int | bool = task.result()
    return result


async def measure(url: str, plan: LoadPlan, console: Console) -> int:
    """Run the load generator in its own process against ``url`` and print its report."""
    console.print(
        f"Driving POST /orders, then POST /orders/sync, at {plan.rate:,.0f} requests/s for "
        f"{plan.duration_s:g} s each (open loop: each request leaves on schedule).\n"
    )
    report = await drive_apart(url, plan, lambda tick: console.print(tick_line(tick)))
    if report is None:
        console.print("[red]The load generator stopped without a report (see above).[/]")
        return 1
    console.print()
    console.print(load_report(report, plan.timeout_s))
    console.print(summary(report, plan.timeout_s))
    return 0
