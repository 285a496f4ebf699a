"""The systems compared: where each runs, on which server, and what it installs.

Peers are pinned (the versions this benchmark was written and checked against) and
installed from PyPI into ``benchmarks/.peers-venv``; offload and the floors run from the
project's ``.venv``. Each system's concurrency setting and why is in its ``sys_*`` module
(``SETTINGS``, printed under the table).
"""

from __future__ import annotations

from dataclasses import dataclass

# What the driver itself needs in the peers' venv (FLUSHALL, CREATE DATABASE).
DRIVER_REQUIREMENTS = ("redis==8.1.0", "hiredis==3.5.0", "psycopg[binary]==3.3.9")


@dataclass(frozen=True)
class System:
    name: str  # the adapter module is sys_<name>
    label: str
    backend: str  # "redis" | "postgres" | "sqlite"
    kind: str  # "offload" | "peer" | "floor"
    requirements: tuple[str, ...] = ()  # empty: runs from the project's .venv

    @property
    def in_peers_venv(self) -> bool:
        return bool(self.requirements)


SYSTEMS = (
    System("floor_redis", "redis-py floor", "redis", "floor"),
    System("offload_redis", "offload (Redis)", "redis", "offload"),
    System("celery", "Celery", "redis", "peer", ("celery[redis]==5.7.0",)),
    System("dramatiq", "Dramatiq", "redis", "peer", ("dramatiq[redis]==2.2.1",)),
    System("rq", "RQ", "redis", "peer", ("rq==3.0.0",)),
    System("arq", "arq", "redis", "peer", ("arq==0.25.0",)),
    System("saq", "SAQ", "redis", "peer", ("saq==0.26.4",)),
    System("streaq", "streaq", "redis", "peer", ("streaq==7.2.0",)),
    System("taskiq", "Taskiq", "redis", "peer", ("taskiq==0.13.0", "taskiq-redis==1.2.4")),
    System("floor_postgres", "psycopg floor", "postgres", "floor"),
    System("offload_postgres", "offload (PostgreSQL)", "postgres", "offload"),
    System("procrastinate", "Procrastinate", "postgres", "peer", ("procrastinate==3.10.0",)),
    System("offload_sqlite", "offload (SQLite)", "sqlite", "offload"),
)
BY_NAME = {s.name: s for s in SYSTEMS}
