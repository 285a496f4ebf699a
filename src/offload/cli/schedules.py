"""``offload scheduler`` runs the scheduler alone; ``offload schedules`` lists schedules."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich.table import Table

from offload import admin
from offload.cli._base import broker_option, console, logging_options, main, run
from offload.logs import setup_logging

if TYPE_CHECKING:
    from offload.app import App
    from offload.schedules import ScheduleInfo


def _load(app_path: str, broker: str | None) -> App:
    app = admin.load_app(app_path)
    if broker:
        app.use_broker(broker)
    return app


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@click.option(
    "--lease",
    default=10.0,
    show_default=True,
    help="Leader lease seconds: a standby takes over this soon after the leader dies.",
)
@broker_option
@logging_options
def scheduler(
    app_path: str, lease: float, broker: str | None, log_level: str, log_format: str
) -> None:
    """Fire MODULE:APP's schedules (run several: one leads, the others stand by)."""
    setup_logging(log_level, log_format)  # type: ignore[arg-type]
    app = _load(app_path, broker)
    app.scheduler_lease = lease

    async def serve() -> None:
        task = asyncio.ensure_future(app.run_scheduler())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await app.close()

    run(serve())


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@broker_option
def schedules(app_path: str, broker: str | None) -> None:
    """List MODULE:APP's schedules with their last and next tick."""
    app = _load(app_path, broker)

    async def go() -> list[ScheduleInfo]:
        try:
            return await app.schedule_infos()
        finally:
            await app.close()

    rows = run(go())
    if not rows:
        console.print("no schedules: declare one with @app.cron(...) or @app.every(...)")
        return
    console.print(schedule_table(rows, datetime.now(UTC).timestamp()))


def schedule_table(rows: list[ScheduleInfo], now: float) -> Table:
    """The rich table ``offload schedules`` prints."""
    table = Table(box=None, header_style="bold")
    for column in ("schedule", "task", "trigger", "misfire", "last tick", "next tick"):
        table.add_column(column)
    for info in rows:
        misfire = info.misfire if info.misfire == "skip" else f"catch_up ≤{info.max_catch_up}"
        if info.skipped:
            misfire += f" ({info.skipped} skipped)"
        table.add_row(
            info.name,
            info.task,
            info.trigger,
            misfire,
            _when(info.last_tick, now),
            _when(info.next_tick, now),
        )
    return table


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    delta = t - now
    ago = f"in {_span(delta)}" if delta >= 0 else f"{_span(-delta)} ago"
    return f"{stamp} ({ago})"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
