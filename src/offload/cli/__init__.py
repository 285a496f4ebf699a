"""The ``offload`` command: parse arguments, call one library function, render the result.

``--broker URL`` (or ``OFFLOAD_BROKER``) overrides the app's broker everywhere; commands
that only read or repair queues need no app at all. Each module adds the commands of one
area to the :func:`main` group.
"""

# Importing each module registers its commands.
from offload.cli import (  # noqa: F401
    dashboard,
    db,
    demo,
    events,
    jobs,
    schedules,
    stats,
    worker,
)
from offload.cli._base import main

__all__ = ["main"]
