"""The JSON API: the same data the pages show, for scripts (``docs/dashboard.md``).

Reads are GET; changes are POST with a JSON body ``{"ids": [...]}`` (or a form) and, unless
the request carries the bearer token, the CSRF token from ``GET /api/csrf`` in the
``X-CSRF-Token`` header with its cookie.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

import msgspec
from starlette.routing import Route

from offload.brokers.base import JobState
from offload.dashboard import actions, params
from offload.dashboard.pages.jobs import filters
from offload.dashboard.web import dashboard_of, form_values, json_response

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["routes"]


class _Ids(msgspec.Struct):
    ids: list[str]


async def overview(request: Request) -> Response:
    view = await dashboard_of(request).queries.overview()
    view.read_only = dashboard_of(request).config.read_only
    return json_response(view)


async def series(request: Request) -> Response:
    window = params.integer(request.query_params, "window", 600, 10, 3600)
    return json_response(await dashboard_of(request).queries.series(window))


async def jobs(request: Request) -> Response:
    f = await filters(request)
    state = None if f.state is None else JobState(f.state)
    page = await dashboard_of(request).queries.jobs(
        queue=f.queue, state=state, task=f.task, limit=f.limit, cursor=f.cursor
    )
    return json_response(page)


async def dead(request: Request) -> Response:
    f = await filters(request, state=JobState.DEAD)
    page = await dashboard_of(request).queries.jobs(
        queue=f.queue, state=JobState.DEAD, task=f.task, limit=f.limit, cursor=f.cursor
    )
    return json_response(page)


async def job(request: Request) -> Response:
    job_id = params.job_id(request.path_params["job_id"])
    view = await dashboard_of(request).queries.job(job_id)
    if view is None:
        return json_response({"error": "no such job"}, 404)
    return json_response(view)


async def workers(request: Request) -> Response:
    return json_response(await dashboard_of(request).queries.workers())


async def topics(request: Request) -> Response:
    return json_response(await dashboard_of(request).queries.topics())


async def schedules(request: Request) -> Response:
    return json_response(await dashboard_of(request).queries.schedules())


async def csrf(request: Request) -> Response:
    """The CSRF token for this client's cookie (set on this response if it had none)."""
    return json_response({"csrf_token": request.scope["state"]["csrf_token"]})


async def act(request: Request) -> Response:
    action = request.path_params["action"]
    if action not in get_args(actions.Action):
        raise params.BadParam(f"unknown action {action!r}")
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            raw = msgspec.json.decode(body, type=_Ids).ids
        except msgspec.ValidationError as exc:
            raise params.BadParam(f'expected {{"ids": [...]}}: {exc}') from None
        except msgspec.DecodeError:
            raise params.BadParam("the body is not valid JSON") from None
    else:
        raw = form_values(request, body).get("ids", [])
    result = await actions.apply(dashboard_of(request).app, action, params.ids(raw))
    return json_response(result)


routes = [
    Route("/api/overview", overview, name="api_overview"),
    Route("/api/series", series, name="api_series"),
    Route("/api/jobs", jobs, name="api_jobs"),
    Route("/api/jobs/{job_id:path}", job, name="api_job"),
    Route("/api/dead", dead, name="api_dead"),
    Route("/api/workers", workers, name="api_workers"),
    Route("/api/events", topics, name="api_events"),
    Route("/api/schedules", schedules, name="api_schedules"),
    Route("/api/csrf", csrf, name="api_csrf"),
    Route("/api/actions/{action}", act, methods=["POST"], name="api_action"),
]
