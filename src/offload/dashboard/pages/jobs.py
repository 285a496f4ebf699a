"""Jobs: filter by queue, state and task; find one by id; one job in full."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from offload.brokers.base import JobState
from offload.dashboard import params
from offload.dashboard.pages.notices import done_notice
from offload.dashboard.web import dashboard_of

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["Filters", "filters", "routes"]


@dataclass(frozen=True)
class Filters:
    """The typed filters of a listing."""

    queue: str | None
    state: str | None
    task: str | None
    limit: int
    cursor: str | None


async def filters(request: Request, *, state: JobState | None = None) -> Filters:
    """Read and check the listing filters (the queue must exist)."""
    q = request.query_params
    queues = await dashboard_of(request).queries.queue_names()
    chosen = state or params.state(q)
    return Filters(
        queue=params.known_name(q, "queue", queues),
        state=None if chosen is None else chosen.value,
        task=params.name(q, "task"),
        limit=params.integer(q, "limit", 50, 1, 200),
        cursor=params.cursor(q),
    )


async def listing(request: Request) -> Response:
    d = dashboard_of(request)
    raw_id = request.query_params.get("id", "").strip()
    if raw_id:
        job_id = params.job_id(raw_id)
        target = f"{request.scope.get('root_path', '')}/jobs/{quote(job_id, safe='')}"
        return RedirectResponse(target, status_code=303)
    f = await filters(request)
    page = await d.queries.jobs(
        queue=f.queue,
        state=None if f.state is None else JobState(f.state),
        task=f.task,
        limit=f.limit,
        cursor=f.cursor,
    )
    return d.render(
        request,
        "jobs.html",
        f=f,
        page=page,
        jobs=page.jobs,
        queues=await d.queries.queue_names(),
        states=[s.value for s in JobState],
        tasks=sorted(d.app.tasks),
    )


async def detail(request: Request) -> Response:
    d = dashboard_of(request)
    job_id = params.job_id(request.path_params["job_id"])
    view = await d.queries.job(job_id)
    if view is None:
        return d.render(request, "error.html", 404, code=404, message=f"No job with id {job_id!r}.")
    return d.render(request, "job.html", d=view, done=done_notice(request))


routes = [
    Route("/jobs", listing, name="jobs"),
    Route("/jobs/{job_id:path}", detail, name="job"),
]
