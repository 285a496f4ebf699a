"""Events: topics, their subscriber groups and each group's lag."""

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
    return d.render(request, "events.html", topics=await d.queries.topics())


routes = [Route("/events", page, name="events")]
