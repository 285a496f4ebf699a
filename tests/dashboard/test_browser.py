"""A real browser over a real run: Playwright drives Debian's chromium against
``offload dashboard``, after ``offload worker`` processed jobs (some into the dead letters).

The set-up installs chromium with apt-get when ``/usr/bin/chromium`` is missing (it never
downloads a browser build of its own). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.acceptance.harness import ROOT, env_for, offload_cmd, run_cli, stop
from tests.backends import unavailable
from tests.dashboard.conftest import XSS, make_app

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium() -> None:
    """Install Debian's chromium if it is missing (root, as on CI)."""
    if Path(CHROMIUM).exists():
        return
    if shutil.which("apt-get") is None:
        unavailable("chromium is missing and apt-get is not available to install it")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            unavailable(f"could not install chromium ({' '.join(cmd)}): {done.stderr[-500:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prepare(url: str) -> dict[str, list[str]]:
    """Enqueue jobs (through a real worker process, some die) and return their ids."""
    app = make_app(url)
    try:
        send, bounce = app.tasks["mail.send"], app.tasks["mail.bounce"]
        ok = [(await send.enqueue(f"user{i}@example.com")).id for i in range(20)]
        dead = [(await bounce.enqueue(XSS if i == 0 else f"x{i}")).id for i in range(3)]
    finally:
        await app.close()
    worker = run_cli(url, "worker", "tests.dashboard.shopapp:app", "--burst")
    assert worker.returncode == 0, worker.stderr
    return {"ok": ok, "dead": dead}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, list[str]]]]:
    """``offload dashboard`` serving a SQLite store that a worker filled."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    ids = asyncio.run(prepare(url))
    port = free_port()
    log = open(tmp_path / "dashboard.log", "wb")
    proc = subprocess.Popen(
        offload_cmd("dashboard", "tests.dashboard.shopapp:app", "--port", str(port)),
        env=env_for(url),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/overview", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.2)
        yield base, url, ids
    finally:
        stop(proc)
        log.close()


@pytest.mark.slow
def test_dashboard_in_a_browser(served) -> None:
    ensure_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (it is in the dev extra)")
    base, _, ids = served
    hostile = ids["dead"][0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: problems.append(f"dialog opened: {d.message}"))
        try:
            page.goto(base + "/")
            page.locator("table.queues").get_by_role("link", name="bounces").wait_for()
            page.locator("table.queues").get_by_role("link", name="mail").wait_for()
            page.locator("#chart-throughput .uplot canvas").wait_for()
            page.locator("#chart-depth .uplot canvas").wait_for()
            page.wait_for_timeout(2500)  # let the live refresh run once (htmx + chart)
            page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

            page.get_by_role("link", name="Dead letters").click()
            row = page.locator("tr", has=page.locator(f"a:text-is('{hostile}')"))
            assert XSS in row.inner_text()  # the <script> argument shows as text
            row.get_by_role("button", name="Requeue").click()
            page.get_by_role("status").filter(has_text="Requeued 1 job(s).").wait_for()
            page.screenshot(path=str(ARTIFACTS / "dashboard-dead-requeued.png"), full_page=True)

            page.goto(f"{base}/jobs/{hostile}")
            page.get_by_text("ValueError").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "dashboard-job.png"), full_page=True)
        finally:
            browser.close()
    state = httpx.get(f"{base}/api/jobs/{hostile}", timeout=5).json()["job"]["state"]
    assert state == "queued"
    assert problems == [], problems  # no script errors, no CSP violations, no alert()
