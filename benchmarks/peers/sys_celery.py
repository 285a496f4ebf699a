"""Celery with its Redis broker (kombu), no result backend (Celery's default).

Pool: ``solo`` runs each job in the worker process itself, one at a time: one process, no
hand-off. ``-P threads -c 8`` measured the same within noise (``PEERS_CELERY_POOL=threads``
switches); prefork would add child processes. Prefetch is Celery's default (4 x
concurrency). Gossip, mingle and heartbeat (cluster events, not the job path) are off.
"""

import os

from _bin import script
from celery import Celery
from record import record

POOL = os.environ.get("PEERS_CELERY_POOL", "solo")
CONCURRENCY = 8
SETTINGS = (
    "-P solo (jobs run one at a time in the worker process itself)"
    if POOL == "solo"
    else f"-P {POOL} -c {CONCURRENCY}"
)

app = Celery("bench", broker=os.environ["PEERS_REDIS_URL"])
app.conf.broker_connection_retry_on_startup = True


@app.task(name="noop")
def noop(i: int) -> None:
    record(i)


def worker_cmd() -> list[str]:
    return [
        script("celery"), "-A", "sys_celery", "worker", "-P", POOL, "-c", str(CONCURRENCY),
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
    ]  # fmt: skip


class Producer:
    def enqueue(self, i: int) -> None:
        noop.delay(i)
