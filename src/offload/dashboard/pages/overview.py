"""Overview: every queue with its counts and Little's-Law figures, and the charts."""

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
    return d.render(request, "overview.html", overview=await d.queries.overview())


async def fragment(request: Request) -> Response:
    """The queue table alone, for the page's live refresh."""
    d = dashboard_of(request)
    return d.render(request, "_queues.html", overview=await d.queries.overview())


routes = [
    Route("/", page, name="overview"),
    Route("/fragments/queues", fragment, name="queues_fragment"),
]
