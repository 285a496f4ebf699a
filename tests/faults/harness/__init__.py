"""The fault-injection harness: private servers, worker processes, a probe, a checker.

* :mod:`.servers`: ``redis-server`` and PostgreSQL clusters of the test's own.
* :mod:`.probe`: the app the workers run; every execution writes a ledger line.
* :mod:`.producer`: enqueues with ids of its own choosing, writing the history.
* :mod:`.processes`: :class:`~.processes.FaultRun`, workers and the faults sent to them.
* :mod:`.checker`: lost / unexpected / duplicates / stale commits / recovery latency.
* :mod:`.fixtures`: pytest fixtures (``fault_backend``), imported by ``conftest.py``.

Long versions: set ``OFFLOAD_FAULTS_LONG=1`` (or run ``python -m tests.faults --long``);
tests read :data:`LONG` to scale jobs, faults and durations.
"""

from __future__ import annotations

import os

LONG = os.environ.get("OFFLOAD_FAULTS_LONG") == "1"


def scale(short: int, long: int) -> int:
    """``short`` in CI, ``long`` under ``OFFLOAD_FAULTS_LONG=1``."""
    return long if LONG else short
