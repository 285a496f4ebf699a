"""What the demo prints: its banner, the load generator's ticks and its report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from offload.demo.load import LoadReport, PathReport, Tick
    from offload.demo.runner import Demo

__all__ = ["banner", "duration", "load_report", "summary", "tick_line"]


def duration(seconds: float | None) -> str:
    """``0.0042`` -> ``4 ms``; ``5.8`` -> ``5.8 s``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"
    return f"{seconds:.1f} s"


def banner(demo: Demo) -> Table:
    """Where everything is."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("shop", f"{demo.shop_url}/")
    if demo.dashboard_url:
        grid.add_row("dashboard", demo.dashboard_url)
    grid.add_row("inbox", f"{demo.inbox_url}  (mail to the SMTP server")
    grid.add_row("", f"{demo.settings.smtp_host}:{demo.settings.smtp_port}, kept in memory)")
    grid.add_row("broker", demo.broker_url)
    grid.add_row("files", f"{demo.settings.dir}/  (shop.db, invoices/)")
    return grid


def tick_line(tick: Tick) -> Text:
    """One progress line of the load generator."""
    answered = [f"{tick.ok:,} {'202' if tick.path == '/orders' else '200'}"]
    if tick.rejected:
        answered.append(f"{tick.rejected:,} 429")
    if tick.timed_out:
        answered.append(f"{tick.timed_out:,} timed out")
    if tick.failed:
        answered.append(f"{tick.failed:,} failed")
    line = f"  {tick.path:<13} {tick.t:>4.0f} s  sent {tick.sent:,}  answered {', '.join(answered)}"
    if tick.path == "/orders" and tick.depth is not None:
        line += f"  · queue {tick.depth}/{tick.max_depth or '?'}"
    return Text(line, style="dim")


def _retry_after(p: PathReport) -> str:
    if not p.rejected:
        return "-"
    values = ", ".join(f"{v} s x{n:,}" for v, n in p.retry_after_s.items())
    return f"{p.rejected:,}  (Retry-After {values}; estimate {duration(p.estimate_s)})"


def _latency(p: PathReport, q: float | None, timeout_s: float) -> str:
    text = duration(q)
    if p.timed_out and q is not None and q >= timeout_s:
        text = f">= {text} (no answer)"
    return text


def load_report(report: LoadReport, timeout_s: float) -> Table:
    """Both endpoints side by side."""
    a, s = report.async_path, report.sync_path
    table = Table(title=f"{report.rate:,.0f} requests/s for {report.duration_s:g} s to each")
    table.add_column("")
    table.add_column("POST /orders\n202 at once, work in the background", justify="right")
    table.add_column("POST /orders/sync\nall the work inside the request", justify="right")
    table.add_row("sent", f"{a.sent:,}", f"{s.sent:,}")
    table.add_row("orders taken", f"{a.ok:,} (202)", f"{s.ok:,} (200)")
    table.add_row("turned away", _retry_after(a), _retry_after(s))
    table.add_row(f"no answer in {timeout_s:g} s", f"{a.timed_out:,}", f"{s.timed_out:,}")
    if a.failed or s.failed:
        table.add_row("failed", f"{a.failed:,}", f"{s.failed:,}")
    table.add_row("latency p50", _latency(a, a.p50_s, timeout_s), _latency(s, s.p50_s, timeout_s))
    table.add_row("latency p99", _latency(a, a.p99_s, timeout_s), _latency(s, s.p99_s, timeout_s))
    depth = f"at most {report.depth_max:,} (bound {report.max_depth or '?'})"
    table.add_row("orders queue", depth, "-")
    return table


def summary(report: LoadReport, timeout_s: float) -> str:
    """What the table means, in words."""
    a, s = report.async_path, report.sync_path
    queue = f"its queue never held more than {report.depth_max:,} (bound {report.max_depth})"
    if a.rejected:
        shed = f"took {a.ok:,} orders, turned {a.rejected:,} away at once with 429 and a "
        shed += f"Retry-After, and so {queue}"
    else:
        shed = f"took all {a.ok:,} orders; {queue}"
    waited = f"made every client wait for the work: p50 {_latency(s, s.p50_s, timeout_s)}"
    if s.timed_out:
        waited += f"; {s.timed_out:,} got no answer in time, and the server went on working"
        waited += " for them"
    lines = [
        f"The background path answered in {duration(a.p50_s)} (p50): it {shed}.",
        f"The in-request path {waited}.",
    ]
    if report.drained_s is not None:
        lines.append(
            f"(Between the two runs the orders queue drained in {report.drained_s:.1f} s.)"
        )
    return "\n".join(lines)
