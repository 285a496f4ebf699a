"""offload on the private Redis."""

import os

os.environ["OFFLOAD_BROKER"] = os.environ["PEERS_REDIS_URL"]

from _offload import SETTINGS, Producer, worker_cmd

__all__ = ["SETTINGS", "Producer", "worker_cmd"]
