"""The HTML pages, one module per page; each exports ``routes``."""

from __future__ import annotations

from offload.dashboard.pages import actions, dead, events, jobs, login, overview, schedules, workers

__all__ = ["routes"]

routes = [
    *overview.routes,
    *jobs.routes,
    *dead.routes,
    *workers.routes,
    *events.routes,
    *schedules.routes,
    *actions.routes,
    *login.routes,
]
