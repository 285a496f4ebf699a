"""offload on the benchmark's PostgreSQL database (schema installed by the first open)."""

import os

os.environ["OFFLOAD_BROKER"] = os.environ["PEERS_PG_URL"]

from _offload import SETTINGS, Producer, worker_cmd

__all__ = ["SETTINGS", "Producer", "worker_cmd"]
