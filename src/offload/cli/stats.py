"""``offload stats``: Little's-Law analytics per queue; ``offload metrics``: Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import click
import msgspec
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from offload.brokers.base import redact_url
from offload.cli._base import app_option, broker_option, connect, console, err_console, main, run
from offload.metrics.littles_law import Analytics

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import RenderableType

    from offload.brokers import Broker
    from offload.metrics.report import FlowStats, Prediction, StatsReport

ASSUMPTIONS = (
    "drain: the jobs queued or running now, at the spare capacity c/S - λ (fluid model).  "
    "wait now: FIFO behind the jobs queued now, exponential service on c slots.  "
    "M/M/c wait, slots: Erlang C, Poisson arrivals at λ, exponential service with mean S, "
    "steady state.  Run with --explain for the inputs behind each number."
)


@main.command()
@click.option("--queue", "-q", "queues", multiple=True, help="Only these queues.")
@click.option("--window", default=60.0, show_default=True, help="Sliding window, seconds.")
@click.option(
    "--target-wait", default=1.0, show_default=True, help="Mean wait to size slots for, seconds."
)
@click.option("--watch", "-w", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option(
    "--sample",
    default=3.0,
    show_default=True,
    help="Without --watch: seconds to measure rates over (percentiles cover the window).",
)
@click.option("--tasks/--no-tasks", default=True, show_default=True, help="Show the task table.")
@click.option("--explain", is_flag=True, help="Print the assumptions behind each prediction.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@app_option
@broker_option
def stats(
    queues: tuple[str, ...],
    window: float,
    target_wait: float,
    watch: bool,
    interval: float,
    sample: float,
    tasks: bool,
    explain: bool,
    as_json: bool,
    app_path: str | None,
    broker: str | None,
) -> None:
    """Arrival and completion rates, L, W, percentiles, utilisation and predictions."""
    analytics = Analytics(min_span_s=1.0 if watch else sample)

    async def measure() -> tuple[str, StatsReport]:
        async with connect(app_path, broker) as b:
            report = await analytics.report(
                b, window_s=window, queues=list(queues) or None, target_wait_s=target_wait
            )
            return b.url, report

    async def live() -> None:
        async with connect(app_path, broker) as b:
            with Live(console=console, auto_refresh=False, screen=False) as screen:
                while True:
                    report = await analytics.report(
                        b, window_s=window, queues=list(queues) or None, target_wait_s=target_wait
                    )
                    screen.update(render(report, b.url, tasks=tasks), refresh=True)
                    await asyncio.sleep(interval)

    if watch:
        with contextlib.suppress(KeyboardInterrupt):
            run(live())
        return
    url, report = run(measure())
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    console.print(render(report, url, tasks=tasks, explain=explain))


@main.command()
@click.option("--port", "-p", default=9464, show_default=True, help="Port to listen on.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--window", default=60.0, show_default=True, help="Analytics window, seconds.")
@click.option("--target-wait", default=1.0, show_default=True, help="Mean wait to size slots for.")
@app_option
@broker_option
def metrics(
    port: int,
    host: str,
    window: float,
    target_wait: float,
    app_path: str | None,
    broker: str | None,
) -> None:
    """Serve Prometheus metrics for every queue, task and worker at http://HOST:PORT/."""
    from offload.metrics.prometheus import serve

    async def go() -> None:
        async with connect(app_path, broker) as b:

            async def source() -> Broker:
                return b

            def ready(bound: int) -> None:
                err_console.print(
                    f"serving metrics of {redact_url(b.url)} on http://{host}:{bound}/metrics"
                )

            await serve(
                source,
                host=host,
                port=port,
                window_s=window,
                target_wait_s=target_wait,
                ready=ready,
            )

    with contextlib.suppress(KeyboardInterrupt):
        run(go())


# ---------------------------------------------------------------------------- rendering


def render(
    report: StatsReport, url: str, *, tasks: bool = True, explain: bool = False
) -> RenderableType:
    """The report as rich tables: flow, latency, predictions, tasks, and the assumptions."""
    if not report.queues:
        return Text(f"No queues yet on {redact_url(url)}: enqueue a job first.")
    title = (
        f"offload on {redact_url(url)}: last {report.window_s:.0f}s, "
        f"{report.workers} worker(s), {report.slots} slot(s)"
    )
    parts: list[RenderableType] = [
        _flow_table(title, "queue", report.queues),
        _latency_table(report.queues),
        _prediction_table(report.queues),
    ]
    if tasks and report.tasks:
        parts.append(_flow_table("per task", "task", report.tasks))
    parts.append(Text(ASSUMPTIONS, style="dim"))
    if explain:
        parts.extend(_explanations(report.queues))
    return Group(*parts)


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def _flow_table(title: str, label: str, flows: list[FlowStats]) -> Table:
    columns = [label, "λ/s", "X/s", "L", "λ·W", "W", "util", "pending", "running", "oldest"]
    table = _table(title, columns)
    for f in flows:
        table.add_row(
            f.name,
            _num(f.arrival_rate),
            _num(f.completion_rate),
            _num(f.jobs_in_system),
            _little(f),
            _dur(f.time_in_system_s),
            _util(f),
            _int(f.pending),
            _int(f.running),
            _dur(f.oldest_pending_age_s),
        )
    return table


def _latency_table(flows: list[FlowStats]) -> Table:
    columns = ["queue", "wait p50", "p95", "p99", "service p50", "p95", "p99", "jobs"]
    table = _table("latency of the jobs finished in the window", columns)
    for f in flows:
        w, s = f.wait, f.service
        table.add_row(
            f.name,
            *(_dur(v) for v in (w.p50, w.p95, w.p99, s.p50, s.p95, s.p99)),
            _int(s.count),
        )
    return table


def _prediction_table(flows: list[FlowStats]) -> Table:
    target = next((f.predictions.target_wait_s for f in flows if f.predictions), 1.0)
    columns = ["queue", "drain", "wait now", "M/M/c wait", f"slots for wait < {target:g}s"]
    table = _table("predictions", columns)
    for f in flows:
        p = f.predictions
        if p is None:
            continue
        table.add_row(
            f.name,
            _pred(p.drain_s, _dur),
            _pred(p.wait_now_s, _dur),
            _pred(p.steady_wait_s, _dur),
            _pred(p.slots_needed, _count) + f" (now {f.slots})",
        )
    return table


def _explanations(flows: list[FlowStats]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for f in flows:
        if f.predictions is None:
            continue
        p = f.predictions
        out.append(Text(f"{f.name}:", style="bold"))
        for label, pred in (
            ("drain", p.drain_s),
            ("wait now", p.wait_now_s),
            ("M/M/c wait", p.steady_wait_s),
            ("slots", p.slots_needed),
        ):
            why = f" [{pred.unavailable}]" if pred.unavailable else ""
            out.append(Text(f"  {label}: {pred.assumes}{why}"))
    return out


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _count(v: float) -> str:
    return f"{v:,.0f}"


def _int(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _dur(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v * 1000:.0f}ms" if v >= 0.001 else f"{v * 1e6:.0f}µs"
    if v < 120:
        return f"{v:.1f}s"
    return f"{v / 60:.1f}m" if v < 7200 else f"{v / 3600:.1f}h"


def _little(f: FlowStats) -> str:
    if f.little_lw is None:
        return "-"
    text = _num(f.little_lw)
    if f.little_error is not None and abs(f.little_error) > 0.2:
        return f"[yellow]{text}[/]"  # far from L: the window is not steady
    return text


def _util(f: FlowStats) -> str:
    if f.utilisation is None:
        return "-"
    colour = "red" if f.utilisation >= 0.9 else "yellow" if f.utilisation >= 0.7 else ""
    text = f"{f.utilisation:.0%}"
    return f"[{colour}]{text}[/]" if colour else text


def _pred(p: Prediction, fmt: Callable[[float], str]) -> str:
    return "[dim]n/a[/]" if p.value is None else fmt(p.value)
