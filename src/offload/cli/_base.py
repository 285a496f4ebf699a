"""What every command module shares: the click group, options, consoles, helpers."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from offload import admin
from offload.errors import OffloadError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from contextlib import AbstractAsyncContextManager

    from offload.brokers import Broker

__all__ = [
    "app_option",
    "broker_option",
    "connect",
    "console",
    "err_console",
    "logging_options",
    "main",
    "run",
]

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _Group(click.Group):
    """Turns offload errors into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OffloadError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="offload")
def main() -> None:
    """offload: background jobs, events, schedules and results."""


app_option = click.option(
    "--app",
    "-A",
    "app_path",
    envvar="OFFLOAD_APP",
    metavar="MODULE:APP",
    help="Your App (e.g. myapp:app); env OFFLOAD_APP.",
)
broker_option = click.option(
    "--broker",
    "-b",
    envvar="OFFLOAD_BROKER",
    metavar="URL",
    help="Broker URL; overrides the app's. Env OFFLOAD_BROKER.",
)


def logging_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--log-level",
        default="INFO",
        show_default=True,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    )(fn)
    return click.option(
        "--log-format",
        default="text",
        show_default=True,
        type=click.Choice(["text", "json"]),
        help="json: one object per line.",
    )(fn)


def connect(app_path: str | None, broker: str | None) -> AbstractAsyncContextManager[Broker]:
    return admin.connect(admin.load_app(app_path) if app_path else None, broker)
