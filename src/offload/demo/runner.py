"""Starting and stopping everything the demo is made of, in one process.

::

    async with running(DemoOptions(dir=Path("offload-demo"))) as demo:
        print(demo.shop_url, demo.inbox_url)

Inside, on the running loop: the SMTP server, the shop's two offload workers (one for
charges, receipts, analytics and the schedule; one with a pool of two processes for the
invoices), and one uvicorn server for the shop, the inbox page and, when given, the
dashboard. Leaving the block stops them in the reverse order, letting running jobs finish.

The workers run in the shop's process (``app.background_worker()``, as a small service
might in its lifespan): they share its broker connection, which on SQLite is cheaper than
two processes taking turns at the file's write lock. A larger deployment runs them apart,
with ``offload worker offload.demo.tasks:app --queues ...`` (see ``docs/demo.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from offload.brokers.base import group_queue
from offload.demo.config import Settings
from offload.demo.inbox import Inbox, inbox_app
from offload.demo.shop import create_shop
from offload.demo.store import Store, store_at
from offload.demo.tasks import MAX_DEPTH, ORDER_PLACED, ORDERS, app
from offload.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.types import ASGIApp

    from offload.worker.worker import Worker


__all__ = ["Demo", "DemoOptions", "running"]

DEFAULT_PORT = 8000
DEFAULT_SMTP_PORT = 8025

#: The shop's workers: charges, receipts, analytics and the schedule in one; the invoices
#: (CPU-bound) in another, whose two slots match its pool of two processes, so an invoice
#: never holds a slot of the first while it waits for a process.
WORKERS: list[dict[str, Any]] = [
    {
        "queues": [
            ORDERS,
            "shop",
            group_queue(ORDER_PLACED, "receipt"),
            group_queue(ORDER_PLACED, "analytics"),
        ],
        "concurrency": 16,
        "scheduler": True,
        "grace_s": 5.0,
    },
    {
        "queues": [group_queue(ORDER_PLACED, "invoice")],
        "concurrency": 2,
        "processes": 2,
        "grace_s": 5.0,
    },
]


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo.

    Attributes:
        broker: broker URL (default: ``sqlite:///<dir>/broker.db``).
        dir: the demo's directory (shop database, invoices, default broker file).
        host: the address the web server and the SMTP server listen on.
        port: the web server's port (``None``: 8000, or any free port if 8000 is taken;
            ``0``: any free port).
        smtp_port: the SMTP server's port (``None``: 8025 or any free one; ``0``: any).
        max_depth: the orders queue's bound.
        fresh: start from empty databases and no invoices (SQLite files in ``dir``).
        dashboard: the dashboard to serve at ``/dashboard/`` (an ASGI app), if any.
    """

    broker: str | None = None
    dir: Path = Path("offload-demo")
    host: str = "127.0.0.1"
    port: int | None = None
    smtp_port: int | None = None
    max_depth: int = MAX_DEPTH
    fresh: bool = True
    dashboard: ASGIApp | None = field(default=None, repr=False)


@dataclass
class Demo:
    """A running demo: where to find it, and its parts."""

    settings: Settings
    broker_url: str
    inbox: Inbox
    store: Store
    workers: list[Worker]
    has_dashboard: bool
    server: uvicorn.Server = field(repr=False)

    @property
    def shop_url(self) -> str:
        """The shop's base URL (no trailing slash)."""
        return self.settings.shop_url

    @property
    def inbox_url(self) -> str:
        """The inbox page."""
        return f"{self.shop_url}/inbox/"

    def requests_in_flight(self) -> int:
        """HTTP requests the server is still handling."""
        return len(self.server.server_state.tasks)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (True) or ``timeout_s`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.requests_in_flight():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @property
    def dashboard_url(self) -> str | None:
        """The dashboard, when served."""
        return f"{self.shop_url}/dashboard/" if self.has_dashboard else None


@contextlib.asynccontextmanager
async def running(options: DemoOptions) -> AsyncIterator[Demo]:
    """Start the demo in the running loop; stop it when the block ends.

    Raises:
        ConfigurationError: a port is taken, or the app is already connected elsewhere.
    """
    web_sock = _bind(options.host, options.port, DEFAULT_PORT)
    smtp_sock = _bind(options.host, options.smtp_port, DEFAULT_SMTP_PORT)
    settings = Settings(
        dir=options.dir.resolve(),
        smtp_host=options.host,
        smtp_port=smtp_sock.getsockname()[1],
        shop_url=f"http://{_hostport(options.host, web_sock.getsockname()[1])}",
    )
    url = options.broker or f"sqlite:///{settings.dir / 'broker.db'}"
    with web_sock, smtp_sock, _environment(settings.to_env()):
        _prepare(settings, fresh=options.fresh)
        app.use_broker(url)
        app.queue(ORDERS, max_depth=options.max_depth, when_full="reject")
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(app.close)
            store = store_at(settings.shop_db)
            stack.callback(_close_store, store)
            inbox = Inbox()
            await inbox.start(smtp_sock)
            stack.push_async_callback(inbox.stop)
            workers = [
                await stack.enter_async_context(app.background_worker(**options))
                for options in WORKERS
            ]
            stack.callback(_stop_all, workers)  # runs first: the workers stop side by side
            site = _site(settings, store, inbox, options.dashboard)
            server = await stack.enter_async_context(_serving(site, web_sock))
            yield Demo(settings, url, inbox, store, workers, options.dashboard is not None, server)


def _stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.stop()


def _close_store(store: Store) -> None:
    store.close()
    store_at.cache_clear()  # a later run in this process opens the (new) file afresh


def _site(settings: Settings, store: Store, inbox: Inbox, dashboard: ASGIApp | None) -> Starlette:
    routes = [Mount("/inbox", inbox_app(inbox))]
    if dashboard is not None:
        routes.append(Mount("/dashboard", dashboard))
    routes.append(Mount("/", create_shop(settings, store, "/dashboard" if dashboard else None)))
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the demo stops all its parts together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def _serving(site: ASGIApp, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(
        site,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        backlog=2048,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve([sock]), name="demo-web")
    while not server.started:
        if task.done():
            await task  # raises what stopped it
            raise ConfigurationError("the demo's web server stopped as it started")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        # Requests still running when the grace period ends are cancelled: for the demo
        # that is the sync path's work for clients that left, not an error worth a
        # traceback each.
        errors = logging.getLogger("uvicorn.error")
        level = errors.level
        errors.setLevel(logging.CRITICAL)
        server.should_exit = True
        try:
            await task
        finally:
            errors.setLevel(level)


def _bind(host: str, port: int | None, default: int) -> socket.socket:
    """A bound TCP socket: ``port``, or ``default`` falling back to any free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, or asyncio will not set TCP_NODELAY on the accepted connections
    # and every keep-alive response after the first waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, default if port is None else port))
        except OSError as exc:
            if port is not None or exc.errno != errno.EADDRINUSE:
                raise ConfigurationError(
                    f"Cannot listen on {host}:{port}: {exc.strerror}. Choose another port "
                    "(0 picks a free one)."
                ) from exc
            sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _prepare(settings: Settings, *, fresh: bool) -> None:
    """Make the demo's directory; when ``fresh``, remove what a previous run left there
    (a broker elsewhere, e.g. Redis, keeps its jobs)."""
    settings.invoices.mkdir(parents=True, exist_ok=True)
    if not fresh:
        return
    for name in ("broker.db", "shop.db"):
        for suffix in ("", "-wal", "-shm"):
            (settings.dir / f"{name}{suffix}").unlink(missing_ok=True)
    for pdf in settings.invoices.glob("invoice-*.pdf"):
        pdf.unlink()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Publish ``values`` to the tasks (and the processes they start) while the demo
    runs; restore what was there afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_logs() -> None:
    """Keep the servers' per-connection chatter out of the demo's output."""
    for name in ("mail.log", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
