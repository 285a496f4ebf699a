"""What the dashboard can change: requeue, delete and cancel jobs by id.

Only ever by id, at most :data:`~offload.dashboard.params.MAX_IDS` at once; the ids were
checked by :func:`offload.dashboard.params.ids`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from offload.brokers.base import JobState
from offload.dashboard.models import ActionResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from offload.app import App

__all__ = ["Action", "apply"]

log = logging.getLogger("offload.dashboard")

Action = Literal["requeue", "delete", "cancel"]


async def apply(app: App, action: Action, ids: Sequence[str]) -> ActionResult:
    """Requeue (dead or cancelled jobs), delete (jobs not running) or cancel jobs.

    ``changed`` counts jobs requeued, deleted, or cancelled (or, if running, asked to stop).
    """
    broker = await app.broker()
    if action == "requeue":
        changed = await broker.requeue(ids)
    elif action == "delete":
        changed = await broker.delete(ids)
    else:
        states = await broker.cancel(ids)
        changed = sum(1 for s in states if s in (JobState.CANCELLED, JobState.RUNNING))
    log.info(
        "dashboard: %s %d of %d job(s)",
        action,
        changed,
        len(ids),
        extra={"action": f"dashboard_{action}", "job_ids": list(ids[:20]), "count": changed},
    )
    return ActionResult(action=action, requested=len(ids), changed=changed)
