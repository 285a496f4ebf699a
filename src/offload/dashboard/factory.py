"""``create_dashboard(app)``: the dashboard as an ASGI app to serve or mount.

::

    from offload.dashboard import create_dashboard

    dashboard = create_dashboard(app, token=os.environ["OFFLOAD_DASHBOARD_TOKEN"])
    # in your Starlette / FastAPI service:
    service.mount("/ops/offload", dashboard)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from offload.dashboard import api, pages
from offload.dashboard.config import DashboardConfig
from offload.dashboard.params import BadParam
from offload.dashboard.queries import Queries
from offload.dashboard.sampler import Sampler
from offload.dashboard.security import Guard, SecurityMiddleware, relative_path
from offload.dashboard.web import Dashboard, dashboard_of, json_response
from offload.errors import BrokerError, BrokerUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection

    from starlette.requests import Request
    from starlette.responses import Response

    from offload.app import App

__all__ = ["create_dashboard"]

log = logging.getLogger("offload.dashboard")


def create_dashboard(
    app: App,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    read_only: bool = False,
    allowed_hosts: Collection[str] | None = None,
    allowed_origins: Collection[str] = (),
    secret: str | None = None,
    refresh_s: float = 2.0,
    sample_every_s: float | None = None,
) -> Starlette:
    """A Starlette app that shows ``app``'s queues, jobs, workers and topics.

    Args:
        app: the offload App to inspect (its broker URL decides what is shown).
        token: require this bearer token (browsers log in once at ``/login``).
        basic_auth: require HTTP basic auth with ``(user, password)``.
        read_only: refuse every change (requeue, delete, cancel).
        allowed_hosts: ``Host`` names to answer to (default: loopback names when no
            authentication is configured, else any).
        allowed_origins: extra origins allowed to POST (e.g. behind a proxy).
        secret: signing key for CSRF tokens and sessions, shared by every process that
            serves this dashboard (default: derived from the token, else random).
        refresh_s: how often pages refresh their live parts (0.5..300 s).
        sample_every_s: also sample queue stats on a timer while the app runs (only when
            served on its own: a mounted app's lifespan does not run). Pages and the API
            sample as they are read in any case.

    Raises:
        ConfigurationError: a token or password shorter than 16 characters, or a
            ``refresh_s`` out of range.
    """
    config = DashboardConfig(
        token=token,
        basic_auth=basic_auth,
        read_only=read_only,
        allowed_hosts=None if allowed_hosts is None else frozenset(allowed_hosts),
        allowed_origins=frozenset(allowed_origins),
        secret=secret,
        refresh_s=refresh_s,
    )
    guard = Guard(config)
    dashboard = Dashboard(app, config, guard, Queries(app, Sampler()))
    static = StaticFiles(packages=[("offload.dashboard", "static")])

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = None
        if sample_every_s:
            task = asyncio.get_running_loop().create_task(
                _sample_forever(dashboard, sample_every_s), name="offload-dashboard-sampler"
            )
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    web = Starlette(
        routes=[*pages.routes, *api.routes, Mount("/static", static, name="static")],
        middleware=[Middleware(SecurityMiddleware, guard=guard)],
        exception_handlers={
            BadParam: _bad_param,
            BrokerUnavailable: _broker_down,
            BrokerError: _broker_error,
        },
        lifespan=lifespan,
    )
    web.state.dashboard = dashboard
    return web


async def _sample_forever(dashboard: Dashboard, every_s: float) -> None:
    while True:
        try:
            await dashboard.queries.sample()
        except BrokerError as exc:
            log.warning("dashboard could not sample queue stats: %s", exc)
        await asyncio.sleep(every_s)


def _error(request: Request, status: int, message: str) -> Response:
    if relative_path(request.scope).startswith("/api/"):
        return json_response({"error": message}, status)
    return dashboard_of(request).render(request, "error.html", status, code=status, message=message)


async def _bad_param(request: Request, exc: Exception) -> Response:
    return _error(request, 400, f"Bad request: {exc}")


async def _broker_down(request: Request, exc: Exception) -> Response:
    return _error(request, 503, f"The broker is unavailable; retry shortly. ({exc})")


async def _broker_error(request: Request, exc: Exception) -> Response:
    log.warning("dashboard request failed: %s", exc)
    return _error(request, 500, f"The broker reported an error: {exc}")
