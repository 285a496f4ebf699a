"""Dead letters: inspect, and requeue or delete one or many (see :mod:`.actions`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

from offload.brokers.base import JobState
from offload.dashboard.pages.jobs import filters
from offload.dashboard.pages.notices import done_notice
from offload.dashboard.web import dashboard_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["routes"]


async def page(request: Request) -> Response:
    d = dashboard_of(request)
    f = await filters(request, state=JobState.DEAD)
    listing = await d.queries.jobs(
        queue=f.queue, state=JobState.DEAD, task=f.task, limit=f.limit, cursor=f.cursor
    )
    return d.render(
        request,
        "dead.html",
        f=f,
        page=listing,
        jobs=listing.jobs,
        queues=await d.queries.queue_names(),
        done=done_notice(request),
    )


routes = [Route("/dead", page, name="dead")]
