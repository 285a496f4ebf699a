"""The peers' own virtualenv, ``benchmarks/.peers-venv`` (git-ignored), never the project's.

Made with ``python3 -m venv`` and filled with ``uv pip install``. Everything is installed in
one go; if that fails, each system is installed on its own, so one that cannot be installed
is reported as failed (with uv's message) and the others still run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from catalog import DRIVER_REQUIREMENTS, System

ROOT = Path(__file__).resolve().parents[2]
PEERS_VENV = ROOT / "benchmarks" / ".peers-venv"


def uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".venv" / "bin" / "uv")
    if not Path(found).exists():
        raise RuntimeError("uv not found: install it (pip install uv) or create the project .venv")
    return found


def _install(python: Path, requirements: list[str]) -> str:
    """'' on success, else the tail of uv's output."""
    proc = subprocess.run(
        [uv(), "pip", "install", "--python", str(python), *requirements],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return "" if proc.returncode == 0 else (proc.stderr or proc.stdout)[-600:].strip()


def ensure(systems: list[System], log=print) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Make the venv if needed and install the peers; return {system name: failure}."""
    peers = [s for s in systems if s.in_peers_venv]
    if not peers:
        return {}
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {PEERS_VENV.relative_to(ROOT)} ...")
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=300)
    wanted = [*DRIVER_REQUIREMENTS, *(r for s in peers for r in s.requirements)]
    if not _install(python, wanted):
        return {}
    if err := _install(python, list(DRIVER_REQUIREMENTS)):
        return {s.name: f"driver requirements: {err}" for s in peers}
    failures = {}
    for s in peers:
        if err := _install(python, list(s.requirements)):
            failures[s.name] = f"install failed: {err}"
    return failures


def versions() -> dict[str, str]:
    """Installed distributions of the peers' venv (for the JSON results)."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        return {}
    proc = subprocess.run(
        [uv(), "pip", "freeze", "--python", str(python)], capture_output=True, text=True
    )
    pairs = (line.split("==", 1) for line in proc.stdout.splitlines() if "==" in line)
    return dict(pairs)  # type: ignore[arg-type]
