"""Medians of the runs, ratios to the floor and the best peer, the table, the targets."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalog import System

METRICS = (
    "enqueue_one", "enqueue_batch", "drain", "cpu_us", "p50_ms", "p99_ms", "send_p99_ms",
)  # fmt: skip


def summarise(systems: list[System], runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{system: {metric: median over its good runs, "runs": n, "errors": [...], ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for s in systems:
        mine = [r for r in runs if r["system"] == s.name]
        good = [r for r in mine if "error" not in r]
        row: dict[str, Any] = {"label": s.label, "backend": s.backend, "kind": s.kind}
        row["runs"], row["errors"] = len(good), [r["error"] for r in mine if "error" in r]
        row["settings"] = good[0]["settings"] if good else ""
        for m in METRICS:
            vals = [r[m] for r in good if r.get(m) is not None]
            row[m] = statistics.median(vals) if vals else None
        out[s.name] = row
    return out


def _best(table: dict[str, dict[str, Any]], backend: str, metric: str, low: bool) -> float | None:
    vals = [
        r[metric] for r in table.values()
        if r["kind"] == "peer" and r["backend"] == backend and r[metric] is not None
    ]  # fmt: skip
    if not vals:
        return None
    return min(vals) if low else max(vals)


def _floor(table: dict[str, dict[str, Any]], backend: str, metric: str) -> float | None:
    row = table.get(f"floor_{backend}")
    return row[metric] if row else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def _num(v: float | None, digits: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


HEAD = (
    f"{'system':<22}{'enq 1/s':>9}{'enq batch/s':>12}{'drain/s':>9}{'CPU µs/job':>11}"
    f"{'p50 ms':>9}{'p99 ms':>9}{'send p99':>9} | {'drain':>7}{'drain':>8}{'batch':>8}{'p99':>10}"
)
HEAD2 = f"{'':<22}{'':>68}{'ms':>9} | {'÷floor':>7}{'÷peer':>8}{'÷floor':>8}{'÷peer':>10}"


def _line(name: str, r: dict[str, Any], table: dict[str, dict[str, Any]]) -> str:
    b = r["backend"]
    if not r["runs"]:
        return f"{r['label']:<22}FAILED: {error_summary(r['errors'])}"
    cells = (
        f"{r['label']:<22}{_num(r['enqueue_one']):>9}{_num(r['enqueue_batch']):>12}"
        f"{_num(r['drain']):>9}{_num(r['cpu_us'], 1):>11}{_num(r['p50_ms'], 2):>9}"
        f"{_num(r['p99_ms'], 2):>9}{_num(r['send_p99_ms'], 2):>9} | "
        f"{_ratio(r['drain'], _floor(table, b, 'drain')):>7}"
        f"{_ratio(r['drain'], _best(table, b, 'drain', False)):>8}"
        f"{_ratio(r['enqueue_batch'], _floor(table, b, 'enqueue_batch')):>8}"
        f"{_ratio(r['p99_ms'], _best(table, b, 'p99_ms', True)):>10}"
    )
    return cells + (f"  ({len(r['errors'])} run(s) failed)" if r["errors"] else "")


def error_summary(errors: list[str]) -> str:
    return errors[0].strip().splitlines()[0][:120] if errors else "?"


def targets(table: dict[str, dict[str, Any]]) -> list[str]:
    """offload's targets (issues 3 and 4), each with its measured value and verdict."""
    out = []
    red, pg = table.get("offload_redis"), table.get("offload_postgres")

    def check(label: str, value: float | None, bound: float | None, ge: bool) -> None:
        if value is None or bound is None:
            out.append(f"  {label}: not measured")
            return
        ok = value >= bound if ge else value <= bound
        out.append(f"  {'PASS' if ok else 'MISS'} {label}: {value:,.2f} vs {bound:,.2f}")

    if red and red["runs"]:
        peer = _best(table, "redis", "drain", False)
        floor = _floor(table, "redis", "drain")
        check("Redis drain >= 3x fastest peer", red["drain"], peer and 3 * peer, True)
        check("Redis drain >= 40% of floor", red["drain"], floor and 0.4 * floor, True)
        fb = _floor(table, "redis", "enqueue_batch")
        check("Redis batch enqueue >= 50% of floor", red["enqueue_batch"], fb and 0.5 * fb, True)
        check(
            "Redis p99 ms <= best peer's",
            red["p99_ms"],
            _best(table, "redis", "p99_ms", True),
            False,
        )
    if pg and pg["runs"]:
        proc = table.get("procrastinate", {}).get("drain")
        check("PostgreSQL drain >= 5,000/s", pg["drain"], 5000.0, True)
        check("PostgreSQL drain >= 3x Procrastinate", pg["drain"], proc and 3 * proc, True)
        check("PostgreSQL p99 ms <= 10", pg["p99_ms"], 10.0, False)
    return out


def per_peer(table: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for mine in (r for r in table.values() if r["kind"] == "offload" and r["runs"]):
        peers = [
            r for r in table.values()
            if r["kind"] == "peer" and r["backend"] == mine["backend"] and r["runs"]
        ]  # fmt: skip
        cells = [
            f"{p['label']} {_ratio(mine['drain'], p['drain'])}"
            f" / {_ratio(mine['p99_ms'], p['p99_ms'])}"
            for p in peers
        ]
        if cells:
            out.append(f"  {mine['label']}: " + ", ".join(cells))
    return out


def _during(loads: list[float] | None) -> str:
    if not loads:
        return ""
    low, mid, high = loads
    return f"{mid:.2f} median at each system's start (min {low:.2f}, max {high:.2f}), "


def render(table: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    args = meta["args"]
    lines = [
        "",
        f"offload vs peers: {args['jobs']:,} no-op jobs drained by ONE worker process; "
        f"latency at {args['rate']:,.0f} jobs/s open loop; median of {args['runs']} run(s)",
        time.strftime("%Y-%m-%d %H:%M", time.localtime(meta["started"]))
        + f", {meta['cpus']} CPUs; 1-min load average: {meta['load_before'][0]:.2f} before, "
        + _during(meta.get("load_during"))
        + f"{meta['load_after'][0]:.2f} after",
        *(f"{k}: {v}" for k, v in meta["servers"].items()),
        "ratios: ÷floor = this / the raw floor on the same server; ÷peer = this / the best "
        "peer on the same server (drain: fastest; p99: lowest); send p99 = the latency "
        "phase's enqueue calls, scheduled instant to return (is the producer keeping up?)",
        "",
        HEAD,
        HEAD2,
    ]
    backend = None
    for name, r in table.items():
        if backend is not None and r["backend"] != backend:
            lines.append("")
        backend = r["backend"]
        lines.append(_line(name, r, table))
    lines += ["", "offload ÷ each peer on the same server (drain rate x, p99 latency x):"]
    lines += per_peer(table)
    lines += ["", "settings (one worker process each):"]
    lines += [f"  {r['label']}: {r['settings']}" for r in table.values() if r["settings"]]
    lines += ["", "offload targets:", *targets(table)]
    return "\n".join(lines)
