"""One dashboard instance: its app, guard, queries and templates, reached from a request.

Routes find it as ``request.app.state.dashboard`` (set by the factory), so two dashboards
in one process never share anything.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import msgspec
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse, Response

from offload.dashboard.params import BadParam

if TYPE_CHECKING:
    from starlette.requests import Request

    from offload.app import App
    from offload.dashboard.config import DashboardConfig
    from offload.dashboard.queries import Queries
    from offload.dashboard.security import Guard

__all__ = ["Dashboard", "dashboard_of", "form_values", "json_response"]


class Dashboard:
    """Everything a route needs, owned by one ASGI app."""

    def __init__(self, app: App, config: DashboardConfig, guard: Guard, queries: Queries) -> None:
        self.app = app
        self.config = config
        self.guard = guard
        self.queries = queries
        self.templates = Environment(
            loader=PackageLoader("offload.dashboard", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(when=when, ago=ago, dur=dur, rate=rate, pct=pct)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A page (or an htmx fragment) from ``templates/name``."""
        state = request.scope.get("state", {})
        root = request.scope.get("root_path", "")
        html = self.templates.get_template(name).render(
            root=root,
            path=request.url.path[len(root) :] or "/",
            nonce=state.get("csp_nonce", ""),
            csrf_token=state.get("csrf_token", ""),
            read_only=self.config.read_only,
            refresh_s=self.config.refresh_s,
            query=query_string,
            **context,
        )
        return HTMLResponse(html, status_code=status)


def dashboard_of(request: Request) -> Dashboard:
    """The dashboard that serves this request."""
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def json_response(value: Any, status: int = 200) -> Response:
    """A JSON response of a view struct (or plain data)."""
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def form_values(request: Request, body: bytes) -> dict[str, list[str]]:
    """Fields of a urlencoded form body (the security middleware bounded its size)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise BadParam("expected a form (application/x-www-form-urlencoded)")
    return parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=1000)


def query_string(**params: Any) -> str:
    """``?a=1&b=2`` from the non-empty values (for links that keep filters)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


# ------------------------------------------------------------------ template filters


def when(t: float | None) -> str:
    """A timestamp as local ``YYYY-MM-DD HH:MM:SS``."""
    if t is None or not math.isfinite(t) or t <= 0:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def dur(seconds: float | None) -> str:
    """A duration, human-sized (``850 ms``, ``12.5 s``, ``3 min``, ``2.1 h``)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ago(t: float | None, now: float) -> str:
    """How long before ``now`` an instant was."""
    return "-" if t is None or t <= 0 else dur(max(0.0, now - t)) + " ago"


def rate(value: float | None) -> str:
    """A rate or a count with sensible precision."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def pct(value: float | None) -> str:
    """A fraction as a percentage."""
    return "-" if value is None else f"{value * 100:.0f}%"
