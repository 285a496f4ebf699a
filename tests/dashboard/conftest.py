"""Dashboard test helpers: an app with jobs in every state, and an HTTP client."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from offload import App
from offload.dashboard import create_dashboard
from offload.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOKEN = "test-token-0123456789abcdef"
XSS = "<script>alert('pwned')</script>"
BASE = "http://127.0.0.1:8700"


def make_app(url: str) -> App:
    """Tasks that succeed, fail, and take hostile arguments."""
    app = App(url, default_queue="mail")

    @app.task(name="mail.send")
    async def send(to: str) -> str:
        return f"sent to {to}"

    @app.task(name="mail.bounce", queue="bounces", retries=1, backoff=RetryPolicy(base=0.0))
    async def bounce(to: str) -> None:
        raise ValueError(f"<img src=x onerror=alert(1)> cannot reach {to}")

    return app


async def fill(app: App, ok: int = 3, dead: int = 2) -> dict[str, list[str]]:
    """Run ``ok`` good jobs and ``dead`` failing ones (one with a ``<script>`` argument)."""
    send, bounce = app.tasks["mail.send"], app.tasks["mail.bounce"]
    good = [(await send.enqueue(f"user{i}@example.com")).id for i in range(ok)]
    bad = [(await bounce.enqueue(XSS if i == 0 else f"x{i}")).id for i in range(dead)]
    for _ in range(50):  # a retry may not be due yet when a burst worker stops
        await app.run_worker(burst=True, poll_s=0.01, queues=("mail", "bounces"))
        stats = await (await app.broker()).stats(["mail", "bounces"])
        if not any(s.counts.pending or s.counts.running for s in stats):
            break
        await asyncio.sleep(0.05)
    return {"ok": good, "dead": bad}


def client(web: Any, **kw: Any) -> httpx.AsyncClient:
    """An HTTP client for an ASGI app, as if on the loopback interface."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url=BASE, **kw)


async def csrf(c: httpx.AsyncClient) -> str:
    """Fetch the CSRF token (and its cookie, kept by the client)."""
    token: str = (await c.get("/api/csrf")).json()["csrf_token"]
    return token


@pytest.fixture
async def filled(app_url: str) -> AsyncIterator[tuple[App, dict[str, list[str]]]]:
    """An app over each backend, with succeeded and dead jobs."""
    app = make_app(app_url)
    ids = await fill(app)
    try:
        yield app, ids
    finally:
        await app.close()


@pytest.fixture
async def memory_app() -> AsyncIterator[tuple[App, dict[str, list[str]]]]:
    """The same on the memory broker only (for tests of the web layer itself)."""
    import uuid

    app = make_app(f"memory://dash-{uuid.uuid4().hex[:8]}")
    ids = await fill(app)
    try:
        yield app, ids
    finally:
        await app.close()


@pytest.fixture
def open_web(memory_app: tuple[App, dict[str, list[str]]]) -> Any:
    """An unauthenticated (loopback) dashboard over ``memory_app``."""
    return create_dashboard(memory_app[0])
