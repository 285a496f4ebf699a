"""``offload demo`` as a user runs it: a real process, its output, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


class Demo:
    """``offload demo ARGS`` with its output read line by line, each with its time."""

    def __init__(self, tmp_path: Path, *args: str, session: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "offload",
                "demo",
                "--dir",
                str(tmp_path / "demo"),
                "--port",
                "0",
                "--smtp-port",
                "0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            start_new_session=session,
        )
        self.lines: list[tuple[float, str]] = []
        self.err = ""
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for r in self._readers:
            r.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds from the start until a line containing ``text`` appeared."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if text in line:
                    return at
            if self.proc.poll() is not None and not any(text in ln for _, ln in self.lines):
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output}\n{self.err}")

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for r in self._readers:
            r.join(timeout=5)
        return code

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def test_the_quick_demo_starts_within_30_seconds_and_tours_the_shop(tmp_path: Path) -> None:
    with Demo(tmp_path, "--quick") as demo:
        up = demo.wait_for("dashboard", timeout=30)
        assert up < 30
        assert demo.finish(timeout=90) == 0, demo.err
    out = demo.output
    assert out.count("202 Accepted") == 2
    assert "200 OK" in out
    assert out.count(" complete: charge ") == 2
    assert "Traceback" not in demo.err
    assert len(list((tmp_path / "demo" / "invoices").glob("*.pdf"))) == 3


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    # As a terminal does: SIGINT to the whole process group (the invoice pool included).
    with Demo(tmp_path, session=True) as demo:
        demo.wait_for("Ctrl-C", timeout=60)
        os.killpg(demo.proc.pid, signal.SIGINT)
        assert demo.finish(timeout=30) == 0, demo.err
    assert "Stopping" in demo.output
    assert "Traceback" not in demo.err


def test_the_load_option_prints_both_paths_side_by_side(tmp_path: Path) -> None:
    with Demo(tmp_path, "--load", "120/s", "--for", "1.5s", "--max-depth", "30") as demo:
        assert demo.finish(timeout=120) == 0, demo.err
    out = demo.output
    for row in (
        "POST /orders",
        "POST /orders/sync",
        "latency p50",
        "latency p99",
        "turned away",
        "Retry-After",
        "bound 30",
    ):
        assert row in out, out
    assert "Traceback" not in demo.err


def test_ctrl_c_during_the_load_run_stops_it_without_a_traceback(tmp_path: Path) -> None:
    with Demo(tmp_path, "--load", "50/s", "--for", "30s", session=True) as demo:
        demo.wait_for("/orders ", timeout=60)  # the first tick: the generator is running
        os.killpg(demo.proc.pid, signal.SIGINT)
        assert demo.finish(timeout=30) == 130, demo.err
    assert "Traceback" not in demo.err


def test_a_bad_rate_is_a_usage_error(tmp_path: Path) -> None:
    with Demo(tmp_path, "--load", "lots") as demo:
        assert demo.finish(timeout=30) == 2
    assert "cannot read the rate 'lots'" in demo.err
