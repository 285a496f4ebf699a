"""offload's web dashboard: queues, jobs, dead letters, workers, topics, schedules.

Needs the ``dashboard`` extra (Starlette, Jinja2, uvicorn). Serve it with
``offload dashboard MODULE:APP`` or mount :func:`create_dashboard` in your own service.
See ``docs/dashboard.md``.
"""

from offload.dashboard.config import DashboardConfig, check_bind, is_loopback
from offload.dashboard.factory import create_dashboard

__all__ = ["DashboardConfig", "check_bind", "create_dashboard", "is_loopback"]
