"""Commands about jobs and queues: enqueue, status, jobs, job, retry, purge, cancel."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from offload import admin
from offload.brokers.base import JobRecord, JobState, redact_url
from offload.cli._base import (
    app_option,
    broker_option,
    connect,
    console,
    err_console,
    main,
    run,
)

# ---------------------------------------------------------------------------- enqueue


@main.command()
@click.argument("task")
@click.option("--args", "args_json", metavar="JSON", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--queue", "-q", help="Queue (default: the task's, or 'default').")
@click.option("--delay", type=float, help="Seconds before it may start.")
@click.option("--priority", type=int, help="Higher runs first.")
@click.option("--wait", "wait_s", type=float, help="Wait this long for the result and print it.")
@app_option
@broker_option
def enqueue(
    task: str,
    args_json: str | None,
    kwargs_json: str | None,
    queue: str | None,
    delay: float | None,
    priority: int | None,
    wait_s: float | None,
    app_path: str | None,
    broker: str | None,
) -> None:
    """Enqueue TASK (a registered task name) with JSON arguments."""
    args = admin.parse_json_arg(args_json, list, "--args")
    kwargs = admin.parse_json_arg(kwargs_json, dict, "--kwargs")
    app = admin.load_app(app_path) if app_path else None
    job_id, record = run(
        admin.enqueue_by_name(
            app,
            broker,
            task,
            args,
            kwargs,
            queue=queue,
            delay=delay,
            priority=priority,
            wait_s=wait_s,
        )
    )
    console.print(f"enqueued [bold]{job_id}[/] ({task})")
    if record is not None:
        console.print(admin.describe_job(record), markup=False, highlight=False)


# ---------------------------------------------------------------------------- status


@main.command()
@click.option("--queue", "-q", "queues", multiple=True, help="Only these queues.")
@app_option
@broker_option
def status(queues: tuple[str, ...], app_path: str | None, broker: str | None) -> None:
    """Jobs per queue and state."""

    async def go() -> tuple[str, list[admin.QueueRow]]:
        async with connect(app_path, broker) as b:
            return b.url, await admin.queue_rows(b, list(queues) or None)

    url, rows = run(go())
    table = Table(title=f"offload queues on {redact_url(url)}", title_justify="left")
    for col in (
        "queue",
        "scheduled",
        "queued",
        "blocked",
        "running",
        "retrying",
        "succeeded",
        "dead",
        "cancelled",
        "oldest waiting",
    ):
        table.add_column(col, justify="left" if col == "queue" else "right")
    for r in rows:
        age = "-" if r.oldest_pending_age_s is None else _human_s(r.oldest_pending_age_s)
        table.add_row(
            r.queue,
            *(
                f"{n:,}"
                for n in (r.scheduled, r.queued, r.blocked, r.running, r.retrying, r.succeeded)
            ),
            f"[red]{r.dead:,}[/]" if r.dead else "0",
            f"{r.cancelled:,}",
            age,
        )
    if not rows:
        console.print(f"No queues yet on {redact_url(url)}: enqueue a job first.")
        return
    console.print(table)


def _human_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


# ---------------------------------------------------------------------------- jobs


@main.command()
@click.option("--queue", "-q")
@click.option("--state", "-s", type=click.Choice([s.value for s in JobState]))
@click.option("--task", "-t", "name")
@click.option("--limit", "-n", default=20, show_default=True)
@app_option
@broker_option
def jobs(
    queue: str | None,
    state: str | None,
    name: str | None,
    limit: int,
    app_path: str | None,
    broker: str | None,
) -> None:
    """List jobs, newest first."""

    async def go() -> list[JobRecord]:
        async with connect(app_path, broker) as b:
            page = await b.list_jobs(
                queue=queue, state=JobState(state) if state else None, name=name, limit=limit
            )
            return page.jobs

    rows = [
        (
            j.id,
            j.name,
            j.queue,
            j.state.value,
            f"{j.attempts}/{j.max_attempts}",
            f"{j.errors[-1].reason}: {j.errors[-1].message}" if j.errors else "",
        )
        for j in run(go())
    ]
    if not console.is_terminal:  # piped: one tab-separated line per job, nothing cut
        for row in rows:
            click.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    table = Table()
    table.add_column("id", no_wrap=True)  # ids must stay whole to be copied
    for col in ("task", "queue", "state", "attempts"):
        table.add_column(col, no_wrap=True)
    table.add_column("last error", overflow="ellipsis", no_wrap=True, max_width=60)
    for row in rows:
        table.add_row(*row, style="red" if row[3] == "dead" else None)
    console.print(table)


@main.command()
@click.argument("job_id")
@app_option
@broker_option
def job(job_id: str, app_path: str | None, broker: str | None) -> None:
    """Show one job: state, timeline, errors with tracebacks."""
    from offload.errors import JobNotFound

    async def go() -> Any:
        async with connect(app_path, broker) as b:
            return await b.get_job(job_id)

    record = run(go())
    if record is None:
        raise JobNotFound(job_id)
    console.print(admin.describe_job(record), markup=False, highlight=False)


# ---------------------------------------------------------------------------- repair


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Every dead job (of --queue, if given).")
@click.option("--queue", "-q")
@app_option
@broker_option
def retry(
    job_ids: tuple[str, ...],
    all_dead: bool,
    queue: str | None,
    app_path: str | None,
    broker: str | None,
) -> None:
    """Move dead jobs back to queued (fresh attempts, history kept)."""
    from rich.progress import Progress

    if not job_ids and not all_dead:
        raise click.UsageError("give job ids, or --all-dead")

    async def go() -> int:
        async with connect(app_path, broker) as b:
            ids = list(job_ids) or [j.id for j in await admin.dead_jobs(b, queue)]
            moved = 0
            with Progress(console=err_console, transient=True) as progress:
                bar = progress.add_task("requeueing", total=len(ids))
                async for n in admin.requeue_dead(b, ids):
                    moved += n
                    progress.advance(bar, 500)
            return moved

    console.print(f"requeued {run(go()):,} job(s)")


@main.command()
@click.argument("queue")
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in JobState if s is not JobState.RUNNING]),
    help="States to delete (default: every waiting state).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@app_option
@broker_option
def purge(
    queue: str, states: tuple[str, ...], yes: bool, app_path: str | None, broker: str | None
) -> None:
    """Delete a queue's waiting jobs (or the given states)."""
    what = ", ".join(states) or "waiting"
    if not yes:
        click.confirm(f"Delete every {what} job of queue {queue!r}?", abort=True)

    async def go() -> int:
        async with connect(app_path, broker) as b:
            return await b.purge(queue, [JobState(s) for s in states] or None)

    console.print(f"deleted {run(go()):,} job(s) from {queue!r}")


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@app_option
@broker_option
def cancel(job_ids: tuple[str, ...], app_path: str | None, broker: str | None) -> None:
    """Cancel jobs (pending ones never start; running ones are stopped)."""

    async def go() -> list[JobState | None]:
        async with connect(app_path, broker) as b:
            return await b.cancel(list(job_ids))

    for job_id, state in zip(job_ids, run(go()), strict=True):
        console.print(f"{job_id}: {'not found' if state is None else state.value}")
