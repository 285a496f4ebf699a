"""``offload dashboard``: serve the web dashboard for an app."""

from __future__ import annotations

import click

from offload import admin
from offload.cli._base import broker_option, logging_options, main, run
from offload.errors import ConfigurationError
from offload.logs import setup_logging


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--token",
    envvar="OFFLOAD_DASHBOARD_TOKEN",
    help="Require this token (16+ characters); env OFFLOAD_DASHBOARD_TOKEN.",
)
@click.option(
    "--basic-auth",
    envvar="OFFLOAD_DASHBOARD_BASIC_AUTH",
    metavar="USER:PASSWORD",
    help="Require HTTP basic auth; env OFFLOAD_DASHBOARD_BASIC_AUTH.",
)
@click.option("--read-only", is_flag=True, help="Show everything, change nothing.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Host header names to answer to (repeatable).",
)
@broker_option
@logging_options
def dashboard(
    app_path: str,
    host: str,
    port: int,
    token: str | None,
    basic_auth: str | None,
    read_only: bool,
    allowed_hosts: tuple[str, ...],
    broker: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the web dashboard for MODULE:APP (on 127.0.0.1 unless told otherwise)."""
    from offload.dashboard.serve import serve

    setup_logging(log_level, log_format)  # type: ignore[arg-type]
    auth = None
    if basic_auth is not None:
        user, sep, password = basic_auth.partition(":")
        if not sep:
            raise ConfigurationError("--basic-auth takes USER:PASSWORD")
        auth = (user, password)
    app = admin.load_app(app_path)
    if broker:
        app.use_broker(broker)
    run(
        serve(
            app,
            host=host,
            port=port,
            token=token,
            basic_auth=auth,
            read_only=read_only,
            allowed_hosts=list(allowed_hosts) or None,
        )
    )
