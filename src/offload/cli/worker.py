"""``offload worker``: run jobs (``--processes N`` supervises N worker processes)."""

from __future__ import annotations

import os
import signal
import sys

import click

from offload import admin
from offload.cli._base import (
    broker_option,
    logging_options,
    main,
    run,
)
from offload.logs import setup_logging

# ---------------------------------------------------------------------------- worker


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@click.option("--queues", "-Q", help="Comma-separated queues (default: every queue the app uses).")
@click.option(
    "--concurrency", "-c", default=10, show_default=True, help="Jobs at once per process."
)
@click.option(
    "--processes", "-p", default=1, show_default=True, help="Worker processes (supervised)."
)
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    help="Lease seconds: how soon a crashed worker's jobs return.",
)
@click.option(
    "--grace",
    default=25.0,
    show_default=True,
    help="Seconds running jobs get to finish on shutdown.",
)
@click.option(
    "--process-pool", type=int, help="Children for executor='process' tasks (default: CPUs)."
)
@click.option("--burst", is_flag=True, help="Exit once no job is ready and none is running.")
@click.option(
    "--scheduler", is_flag=True, help="Also fire the app's schedules (one worker leads at a time)."
)
@click.option(
    "--connect-timeout",
    default=30.0,
    show_default=True,
    help="At start, wait this long for an unreachable broker (it may be starting too).",
)
@broker_option
@logging_options
def worker(
    app_path: str,
    queues: str | None,
    concurrency: int,
    processes: int,
    lease: float,
    grace: float,
    process_pool: int | None,
    burst: bool,
    scheduler: bool,
    connect_timeout: float,
    broker: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run a worker for MODULE:APP."""
    # Until the worker installs its own handlers nothing is claimed: exit cleanly at once.
    signal.signal(signal.SIGTERM, _exit_before_start)
    setup_logging(log_level, log_format)  # type: ignore[arg-type]
    if processes > 1:
        from offload.worker.supervisor import Supervisor

        sys.exit(Supervisor(without_processes(sys.argv[1:]), processes, grace).run())
    app = admin.load_app(app_path)
    if broker:
        app.use_broker(broker)
    supervisor = os.environ.get("OFFLOAD_SUPERVISOR_PID")

    async def serve() -> None:
        try:
            await admin.wait_for_broker(app, connect_timeout)
            await app.run_worker(
                queues=tuple(queues.split(",")) if queues else tuple(app.served_queues()),
                concurrency=concurrency,
                lease_s=lease,
                grace_s=grace,
                burst=burst,
                scheduler=scheduler,
                processes=process_pool,
                install_signals=True,
                supervisor_pid=int(supervisor) if supervisor else None,
            )
        finally:
            await app.close()

    run(serve())


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def without_processes(argv: list[str]) -> list[str]:
    """The command line minus ``--processes``/``-p`` and its value (for the children)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-p", "--processes"):
            skip = True
        elif not arg.startswith("--processes=") and not (
            arg.startswith("-p") and arg[2:].isdigit()
        ):
            out.append(arg)
    return out
