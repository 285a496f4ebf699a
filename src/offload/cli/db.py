"""``offload db``: the broker's own storage."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from offload import admin
from offload.brokers import DEFAULT_URL, open_broker
from offload.brokers.base import redact_url
from offload.cli._base import app_option, broker_option, console, main, run

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any


@main.group()
def db() -> None:
    """The broker's own storage: schema migrations."""


@db.command()
@app_option
@broker_option
def migrate(app_path: str | None, broker: str | None) -> None:
    """Create or upgrade offload's schema to this version (PostgreSQL).

    Safe while workers run. SQLite upgrades its file by itself when opened; Redis and the
    memory broker keep no schema.
    """
    url = broker or (admin.load_app(app_path).url if app_path else None)
    url = url or os.environ.get("OFFLOAD_BROKER") or DEFAULT_URL
    target = open_broker(url)
    upgrade: Callable[[], Coroutine[Any, Any, list[int]]] | None = getattr(target, "migrate", None)
    if upgrade is None:
        console.print(f"{target.capabilities.name}: nothing to migrate ({redact_url(url)}).")
        return
    applied = run(upgrade())
    if applied:
        console.print(f"applied migration(s) {', '.join(map(str, applied))} on {redact_url(url)}")
    else:
        console.print(f"schema already up to date on {redact_url(url)}")
