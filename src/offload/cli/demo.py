"""``offload demo``: the tea shop that shows why a service goes asynchronous."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from offload.cli._base import console, main

if TYPE_CHECKING:
    from starlette.types import ASGIApp

# ---------------------------------------------------------------------------- demo


@main.command()
@click.option(
    "--broker",
    "-b",
    envvar="OFFLOAD_BROKER",
    metavar="URL",
    help="Broker URL (default: sqlite:///DIR/broker.db, made fresh).",
)
@click.option(
    "--dir",
    "directory",
    default="offload-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo keeps its databases and invoices.",
)
@click.option("--port", type=click.IntRange(0, 65535), help="Web port (default 8000, or any free).")
@click.option("--smtp-port", type=click.IntRange(0, 65535), help="SMTP port (default 8025).")
@click.option(
    "--scenario/--no-scenario", default=True, help="Place a few orders first, and follow them."
)
@click.option("--quick", is_flag=True, help="Stop after the scenario (a one-minute look).")
@click.option("--load", "rate", metavar="RATE", help="Drive both endpoints, e.g. 200/s, and stop.")
@click.option(
    "--for", "duration", default="30s", show_default=True, help="How long --load drives each."
)
@click.option("--target", metavar="URL", help="With --load: drive a demo already running there.")
@click.option(
    "--max-depth", default=200, show_default=True, help="The orders queue's bound (then 429)."
)
def demo(
    broker: str | None,
    directory: Path,
    port: int | None,
    smtp_port: int | None,
    scenario: bool,
    quick: bool,
    rate: str | None,
    duration: str,
    target: str | None,
    max_depth: int,
) -> None:
    """Run the demo shop: POST /orders answers 202 at once, workers do the rest.

    Serves the shop, the offload dashboard and an SMTP inbox on 127.0.0.1, places a few
    orders, and runs until Ctrl-C. With --load, compares the background path with the
    in-request path under load (and shows back pressure: 429 + Retry-After).
    """
    from offload.demo.load import LoadPlan, parse_duration, parse_rate
    from offload.demo.runner import DemoOptions
    from offload.demo.session import Plan, run

    try:
        load = LoadPlan(parse_rate(rate), parse_duration(duration)) if rate else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if target and not load:
        raise click.UsageError("--target goes with --load (what to drive there)")
    options = DemoOptions(
        broker=broker,
        dir=directory,
        port=port,
        smtp_port=smtp_port,
        max_depth=max_depth,
        dashboard=None if target else _dashboard(),
    )
    sys.exit(run(options, Plan(scenario=scenario, quick=quick, load=load, target=target), console))


def _dashboard() -> ASGIApp:
    from offload.dashboard import create_dashboard
    from offload.demo.tasks import app

    return create_dashboard(app, refresh_s=2.0)
