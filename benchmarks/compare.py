"""offload beside Celery, Dramatiq, RQ, arq, SAQ, streaq, Taskiq and Procrastinate.

    python3 benchmarks/compare.py [--jobs 20000] [--runs 3] [--systems a,b,...]

One command: it starts its own servers on free loopback ports (a private ``redis-server``
with ``--save '' --appendonly no``, and a private PostgreSQL 15 cluster with ``fsync=on``,
or with ``--shared-pg`` or when that is impossible a fresh database on the shared
127.0.0.1:5432, which the output then says), installs the peers from PyPI into
``benchmarks/.peers-venv`` (never the project's ``.venv``), and runs every system, one
after the other, in a subprocess of its own with a timeout, on the same servers.

Each system runs the same no-op task (it appends its job index and ``time.time()`` to a
shared file with one ``write(2)``: the same ~2 µs for every system) with ONE worker
process, and is measured on: enqueue rate one at a time and in batches of 1,000 (where the
system has a batch enqueue), the drain rate of a backlog of N jobs (first recorded start
to last), the worker tree's CPU µs per job during the drain (``/proc``, children included),
and enqueue-to-start latency p50/p99 at a steady 500 jobs/s from an open-loop producer.
See ``benchmarks/peers/driver.py`` for the phases and ``docs/benchmarks.md`` for each
system's settings.

Prints one table (medians of the runs, ratios to the raw floor of the same server and to
the best peer) and writes every run's raw figures to ``benchmarks/results/compare-*.json``.
A system that fails to install or run is reported with its reason; servers and temp dirs
are removed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))

import catalog  # noqa: E402
import peersenv  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=20_000, help="backlog drained (default 20,000)")
    p.add_argument("--runs", type=int, default=3, help="runs per system; medians are shown")
    p.add_argument("--rate", type=float, default=500.0, help="latency phase, jobs/s")
    p.add_argument("--seconds", type=float, default=6.0, help="latency phase duration")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per system run")
    p.add_argument("--systems", help="comma-separated subset: " + ",".join(catalog.BY_NAME))
    p.add_argument("--shared-pg", action="store_true", help="use 127.0.0.1:5432, no cluster")
    p.add_argument("--no-install", action="store_true", help="use .peers-venv as it is")
    return p.parse_args()


def chosen(spec: str | None) -> list[catalog.System]:
    if not spec:
        return list(catalog.SYSTEMS)
    unknown = [n for n in spec.split(",") if n not in catalog.BY_NAME]
    if unknown:
        sys.exit(f"unknown systems {unknown}; choose from {', '.join(catalog.BY_NAME)}")
    return [catalog.BY_NAME[n] for n in spec.split(",")]


def run_one(system: catalog.System, cfg: dict[str, object], timeout: float) -> dict[str, object]:
    """One driver subprocess (a session of its own); its result or {"error": reason}."""
    python = peersenv.PEERS_VENV / "bin" / "python" if system.in_peers_venv else PROJECT_PYTHON
    if not python.exists():
        where = "run without --no-install" if system.in_peers_venv else "create the project .venv"
        return {"error": f"{python} does not exist: {where}"}
    work = Path(tempfile.mkdtemp(prefix=f"peers-{system.name}-"))
    cfg = {**cfg, "system": system.name, "work": str(work)}
    if system.backend != "redis":
        cfg.pop("redis_url", None)
    if system.backend != "postgres":
        cfg.pop("pg_url", None)
    proc = subprocess.Popen(
        [str(python), str(PEERS / "driver.py"), json.dumps(cfg)],
        cwd=PEERS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        if proc.returncode == 0 and lines:
            return dict(json.loads(lines[-1]))
        return {"error": _failure(proc.returncode, err, work / "worker.log")}
    except subprocess.TimeoutExpired:
        procs.kill_session(proc.pid)
        _, err = proc.communicate()
        failure = _failure(proc.returncode, err, work / "worker.log")
        return {"error": f"timed out after {timeout:.0f} s\n{failure}"}
    finally:
        procs.kill_session(proc.pid)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _failure(code: int, stderr: str, log: Path) -> str:
    """The driver's last word first (the table shows that line), then the tails."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    worker = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    tail = "\n".join(lines[-25:])
    last = lines[-1] if lines else f"exit {code}"
    return f"{last}\n--- driver (exit {code}) ---\n{tail}\n--- worker log ---\n{worker}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def start_servers(
    systems: list[catalog.System], args: argparse.Namespace, stack: contextlib.ExitStack
) -> tuple[dict[str, object], dict[str, str]]:
    """The servers the chosen systems need (stopped by ``stack``); the drivers' common
    config and a line per server for the table."""
    base: dict[str, object] = {
        "jobs": args.jobs, "rate": args.rate, "seconds": args.seconds,
        "pg_db": f"peers_bench_{os.getpid()}",
    }  # fmt: skip
    notes: dict[str, str] = {}
    if any(s.backend == "redis" for s in systems):
        redis_srv = servers.PrivateRedis()
        stack.callback(redis_srv.stop)
        redis_srv.start()
        base["redis_url"] = redis_srv.url
        notes["redis"] = redis_srv.description
    if any(s.backend == "postgres" for s in systems):
        pg_srv, why = servers.start_postgres(args.shared_pg)
        stack.callback(pg_srv.stop)
        if isinstance(pg_srv, servers.SharedPostgres):
            stack.callback(pg_srv.drop, str(base["pg_db"]))
        base["pg_url"] = pg_srv.url
        notes["postgres"] = pg_srv.description + (f" (private cluster: {why})" if why else "")
    return base, notes


def run_all(
    systems: list[catalog.System], base: dict[str, object], args: argparse.Namespace,
    failures: dict[str, str], results: Results,
) -> None:  # fmt: skip
    """Every system once per run, interleaved, so slow drifts in load hit all of them;
    the results file is rewritten after each system (an interrupted run keeps its data)."""
    for r in range(args.runs):
        for s in systems:
            load = os.getloadavg()[0]
            if s.name in failures:
                result: dict[str, object] = {"error": failures[s.name]}
            else:
                print(f"run {r + 1}/{args.runs}: {s.label} ...", file=sys.stderr, flush=True)
                result = run_one(s, base, args.timeout)
                if "error" in result:
                    summary = report.error_summary([str(result["error"])])
                    print(f"  failed: {summary}", file=sys.stderr)
            results.runs.append({"system": s.name, "run": r + 1, "load": load, **result})
            results.save()


class Results:
    """``benchmarks/results/compare-<time>.json``: the meta, every run, the medians."""

    def __init__(self, args: argparse.Namespace) -> None:
        name = time.strftime("compare-%Y%m%d-%H%M%S.json")
        self.path = ROOT / "benchmarks" / "results" / name
        self.runs: list[dict[str, object]] = []
        self.meta: dict[str, object] = {
            "command": " ".join(sys.argv), "started": time.time(), "args": vars(args),
            "load_before": os.getloadavg(), "cpus": os.cpu_count(), "servers": {},
        }  # fmt: skip
        self.medians: object = None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "runs": self.runs, "medians": self.medians}
        self.path.write_text(json.dumps(data, indent=1))


def main() -> None:
    args = parse_args()
    systems = chosen(args.systems)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # even if started with SIGINT ignored
    results = Results(args)
    try:
        with contextlib.ExitStack() as stack:
            failures = {}
            if not args.no_install:
                failures = peersenv.ensure(systems, log=lambda m: print(m, file=sys.stderr))
            base, results.meta["servers"] = start_servers(systems, args, stack)
            results.meta["peer_versions"] = peersenv.versions()
            run_all(systems, base, args, failures, results)
    except KeyboardInterrupt:
        print("interrupted: servers stopped, temp dirs removed", file=sys.stderr)
        if results.runs:
            print(f"runs so far: {results.path.relative_to(ROOT)}", file=sys.stderr)
        sys.exit(130)
    loads = sorted(float(r["load"]) for r in results.runs)  # type: ignore[arg-type]
    results.meta.update(
        finished=time.time(), load_after=os.getloadavg(),
        load_during=[loads[0], loads[len(loads) // 2], loads[-1]] if loads else None,
    )  # fmt: skip
    results.medians = report.summarise(systems, results.runs)
    results.save()
    print(report.render(results.medians, results.meta))
    print(f"raw results: {results.path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
