"""Run the fault suite: ``python -m tests.faults [--long] [pytest options]``.

The short versions are what CI runs (``make test`` includes them). ``--long`` sets
``OFFLOAD_FAULTS_LONG=1``: ten times the jobs, many more kills, pauses and outages, and
longer blocked loops (see each test's ``scale(short, long)``). Reports are printed
(``-s``) and written as JSON in each test's temp dir; add ``--basetemp DIR`` to keep them
in one place. Servers are private (``redis-server``, ``initdb``): nothing else is needed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long versions")
    args, pytest_args = parser.parse_known_args(argv)
    env = dict(os.environ)
    if args.long:
        env["OFFLOAD_FAULTS_LONG"] = "1"
    command = [sys.executable, "-m", "pytest", "tests/faults", "-s", "-q", *pytest_args]
    return subprocess.call(command, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
