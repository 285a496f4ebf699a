"""Schedules: what runs when, last and next runs."""

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
    return d.render(request, "schedules.html", listing=await d.queries.schedules())


routes = [Route("/schedules", page, name="schedules")]
