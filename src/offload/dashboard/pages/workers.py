"""Workers: live processes, their heartbeats and the jobs they hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

from offload.dashboard.web import dashboard_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["routes"]


async def page(request: Request) -> Response:
    d = dashboard_of(request)
    return d.render(request, "workers.html", workers=await d.queries.workers())


async def fragment(request: Request) -> Response:
    d = dashboard_of(request)
    return d.render(request, "_workers.html", workers=await d.queries.workers())


routes = [
    Route("/workers", page, name="workers"),
    Route("/fragments/workers", fragment, name="workers_fragment"),
]
