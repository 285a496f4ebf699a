"""Token login for browsers: the token is posted once and a session cookie is set."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from offload.dashboard.security import SESSION_COOKIE
from offload.dashboard.web import dashboard_of, form_values

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["routes"]

FAILED_LOGIN_DELAY_S = 0.5


async def form(request: Request) -> Response:
    d = dashboard_of(request)
    if d.config.token is None:
        message = "This dashboard has no token login" + (
            " (it uses basic authentication)." if d.config.basic_auth else "."
        )
        return d.render(request, "error.html", 404, code=404, message=message)
    return d.render(request, "login.html", error=None)


async def submit(request: Request) -> Response:
    d = dashboard_of(request)
    given = form_values(request, await request.body()).get("token", [""])[0]
    if not d.guard.token_matches(given):
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)  # slows guessing
        return d.render(request, "login.html", 401, error="Wrong token.")
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        d.guard.session_value(),
        path=root or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


routes = [
    Route("/login", form, methods=["GET"], name="login"),
    Route("/login", submit, methods=["POST"], name="login_submit"),
]
