"""``offload demo``: a guided run on the embedded SQLite broker.

Starts a worker in this process, enqueues a few hundred jobs of four kinds, shows them
move through their states live, and ends with what happened and what to try next:

* ``resize_image``: fast async jobs;
* ``generate_report``: slower jobs that report progress;
* ``call_flaky_api``: fails once or twice (an upstream 503), then succeeds on retry;
* ``parse_upload``: a sync task given bad input now and then: retried, then dead-lettered;
* plus two poison messages written straight to the broker: bytes that are not a job, and a
  job for a task nobody registered. Both go to the dead letters with their reason and
  block nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offload import App, constant, current_job, exponential, progress
from offload.brokers.base import EnqueueRequest, JobState, QueueStats

if TYPE_CHECKING:
    from rich.console import Console, Group

__all__ = ["app", "run_demo"]

QUEUE = "demo"
app = App("memory://", default_queue=QUEUE)


@app.task(name="demo.resize_image")
async def resize_image(image_id: int) -> dict[str, int]:
    """A fast job."""
    await asyncio.sleep(random.uniform(0.001, 0.01))
    return {"image_id": image_id, "width": 640, "height": 480}


@app.task(name="demo.generate_report")
async def generate_report(report_id: int) -> str:
    """A slower job that reports its progress."""
    for section in range(1, 6):
        await progress(section / 5, f"section {section}/5")
        await asyncio.sleep(random.uniform(0.02, 0.12))
    return f"report-{report_id}.pdf"


@app.task(name="demo.call_flaky_api", retries=3, backoff=exponential(0.2, max_delay=1.0))
async def call_flaky_api(request_id: int) -> str:
    """Fails on its first one or two attempts (as a flaky upstream would), then succeeds."""
    if current_job().attempt <= 1 + request_id % 2:
        raise ConnectionError("upstream answered 503 Service Unavailable")
    return "200 OK"


@app.task(name="demo.parse_upload", retries=2, backoff=constant(0.2))
def parse_upload(upload: str) -> int:
    """A sync task (runs in a thread); bad input fails every attempt and ends dead."""
    return int(upload)


def _jobs(n: int) -> dict[str, list[tuple[Any, ...]]]:
    quarter = max(1, n // 4)
    return {
        "resize": [(i,) for i in range(n - 3 * quarter)],
        "report": [(i,) for i in range(quarter)],
        "flaky": [(i,) for i in range(quarter)],
        "parse": [("not-a-number" if i % 10 == 0 else str(i),) for i in range(quarter)],
    }


async def _enqueue_all(n: int) -> int:
    jobs = _jobs(n)
    await resize_image.enqueue_many(jobs["resize"])
    await generate_report.enqueue_many(jobs["report"])
    await call_flaky_api.enqueue_many(jobs["flaky"])
    await parse_upload.enqueue_many(jobs["parse"])
    broker = await app.broker()
    now = app.clock.now()
    poison = [
        EnqueueRequest(
            id="poison-undecodable",
            queue=QUEUE,
            name="?",
            enqueued_at=now,
            payload=b"\x00\xffthis is not an offload envelope",
        ),
    ]
    await broker.enqueue(poison)
    from offload.admin import _enqueue_raw

    await _enqueue_raw(app, "demo.no_such_task", [], {}, QUEUE, None, None)
    return sum(len(v) for v in jobs.values()) + 2


def _view(stats: QueueStats, bar: Progress) -> Group:
    from rich.console import Group

    c = stats.counts
    table = Table.grid(padding=(0, 3))
    for _ in range(6):
        table.add_column(justify="right")
    table.add_row(
        *(
            f"[dim]{s}[/]"
            for s in ("queued", "scheduled", "running", "retrying", "succeeded", "dead")
        )
    )
    table.add_row(
        f"{c.queued}",
        f"{c.scheduled}",
        f"[cyan]{c.running}[/]",
        f"[yellow]{c.retrying}[/]",
        f"[green]{c.succeeded}[/]",
        f"[red]{c.dead}[/]",
    )
    return Group(bar, Panel(table, title="jobs by state", expand=False))


async def _watch(total: int, console: Console, timeout_s: float) -> QueueStats:
    broker = await app.broker()
    bar = Progress(
        TextColumn("[bold]finished"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("jobs", total=total)
    deadline = time.monotonic() + timeout_s
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            [stats] = await broker.stats([QUEUE])
            done = stats.counts.succeeded + stats.counts.dead + stats.counts.cancelled
            bar.update(task, completed=done)
            live.update(_view(stats, bar))
            if done >= total or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.15)


async def _summary(console: Console, stats: QueueStats, elapsed: float) -> None:
    broker = await app.broker()
    dead = await broker.list_jobs(queue=QUEUE, state=JobState.DEAD, limit=1000)
    reasons: dict[str, int] = {}
    for job in dead.jobs:
        reason = job.errors[-1].reason if job.errors else "?"
        reasons[reason] = reasons.get(reason, 0) + 1
    timings = await broker.timings(QUEUE, since=0, limit=10_000)
    waits = sorted(t.started_at - t.run_at for t in timings)
    c = stats.counters
    table = Table(title="What happened", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("succeeded", f"[green]{stats.counts.succeeded}[/]")
    table.add_row("retried attempts", f"{c.retried} (flaky calls succeeded on a later attempt)")
    table.add_row("dead letters", ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())))
    table.add_row(
        "throughput", f"{stats.counts.succeeded / elapsed:,.0f} jobs/s over {elapsed:.1f}s"
    )
    if waits:
        p50, p99 = waits[len(waits) // 2], waits[int(len(waits) * 0.99)]
        table.add_row("wait for a worker", f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    console.print(table)


def run_demo(url: str | None, n_jobs: int, console: Console) -> None:
    """Run the demo against ``url`` (default: ./offload-demo.db, recreated)."""
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, show_time=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s")
    if url is None:
        path = Path("offload-demo.db").resolve()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    app.use_broker(url)
    console.rule("[bold]offload demo")
    console.print(f"broker: [bold]{url}[/]   queue: [bold]{QUEUE}[/]\n")
    asyncio.run(_main(url, n_jobs, console))


async def _main(url: str, n_jobs: int, console: Console) -> None:
    try:
        worker = await app.worker(queues=(QUEUE,), concurrency=32, lease_s=10)
        running = asyncio.create_task(worker.run())
        started = time.monotonic()
        total = await _enqueue_all(n_jobs)
        console.print(f"enqueued {total} jobs; a worker with 32 slots runs them:\n")
        stats = await _watch(total, console, timeout_s=120)
        elapsed = time.monotonic() - started
        worker.stop()
        await running
        await _summary(console, stats, elapsed)
        console.print(
            "\nNext: [bold]offload status -b " + url + "[/]   "
            "[bold]offload jobs -b " + url + " --state dead[/]   "
            "[bold]offload retry -b " + url + " --all-dead[/]"
        )
    finally:
        await app.close()
