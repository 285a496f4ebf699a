"""offload on a fresh SQLite file in the run's temp directory (WAL, on local disk)."""

import os
from pathlib import Path

from record import ENV

os.environ["OFFLOAD_BROKER"] = f"sqlite:///{Path(os.environ[ENV]).parent / 'bench.db'}"

from _offload import SETTINGS, Producer, worker_cmd

__all__ = ["SETTINGS", "Producer", "worker_cmd"]
