"""Serving the dashboard on its own (what ``offload dashboard`` runs)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from offload.dashboard.config import DashboardConfig, check_bind
from offload.dashboard.factory import create_dashboard

if TYPE_CHECKING:
    from offload.app import App

__all__ = ["serve"]

log = logging.getLogger("offload.dashboard")


async def serve(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    read_only: bool = False,
    allowed_hosts: list[str] | None = None,
    **options: Any,
) -> None:
    """Serve the dashboard with uvicorn until interrupted, then close the app.

    Raises:
        ConfigurationError: a non-loopback ``host`` without a token or basic auth (the
            check runs before anything listens).
    """
    import uvicorn

    check_bind(host, DashboardConfig(token=token, basic_auth=basic_auth))
    web = create_dashboard(
        app,
        token=token,
        basic_auth=basic_auth,
        read_only=read_only,
        allowed_hosts=allowed_hosts,
        sample_every_s=2.0,
        **options,
    )
    config = uvicorn.Config(
        web, host=host, port=port, log_config=None, access_log=False, server_header=False
    )
    where = f"[{host}]" if ":" in host else host
    log.info("dashboard on http://%s:%d/", where, port, extra={"action": "dashboard_started"})
    try:
        await uvicorn.Server(config).serve()
    finally:
        await app.close()
