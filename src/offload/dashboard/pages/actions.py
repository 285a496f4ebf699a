"""The state-changing forms: requeue, delete, cancel. POST only; the security middleware
has already checked the CSRF token, the origin and read-only mode before these run."""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from offload.dashboard import actions, params
from offload.dashboard.pages.notices import done_param
from offload.dashboard.web import dashboard_of, form_values, query_string

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["routes"]


async def act(request: Request) -> Response:
    d = dashboard_of(request)
    action = request.path_params["action"]
    if action not in get_args(actions.Action):
        raise params.BadParam(f"unknown action {action!r}")
    form = form_values(request, await request.body())
    one = form.get("one", [])
    ids = params.ids(one if one else form.get("ids", []))
    result = await actions.apply(d.app, action, ids)
    return RedirectResponse(
        await _back(request, form, ids, done_param(action, result.changed)), status_code=303
    )


async def _back(request: Request, form: dict[str, list[str]], ids: list[str], done: str) -> str:
    """Where to go after the action: a fixed page, never a URL taken from the form."""
    root = request.scope.get("root_path", "")
    if form.get("back") == ["job"] and len(ids) == 1:
        return f"{root}/jobs/{quote(ids[0], safe='')}{query_string(done=done)}"
    queue = (form.get("queue") or [""])[0]
    known = await dashboard_of(request).queries.queue_names()
    return f"{root}/dead{query_string(queue=queue if queue in known else None, done=done)}"


routes = [Route("/actions/{action}", act, methods=["POST"], name="action")]
