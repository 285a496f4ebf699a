"""``offload demo``."""

from __future__ import annotations

import click

from offload.cli._base import (
    console,
    main,
)

# ---------------------------------------------------------------------------- demo


@main.command()
@click.option(
    "--broker",
    "-b",
    envvar="OFFLOAD_BROKER",
    metavar="URL",
    help="Broker URL (default: a fresh SQLite file in a temporary directory).",
)
@click.option("--jobs", "n_jobs", default=300, show_default=True, help="How many jobs to run.")
def demo(broker: str | None, n_jobs: int) -> None:
    """A guided run: a worker, a few hundred jobs of several kinds, live progress."""
    from offload.demo.quick import run_demo

    run_demo(broker, n_jobs, console)
