"""The shop's web service (Starlette): take orders two ways, show them, show the queue.

* ``POST /orders``: validate, enqueue the charge, answer ``202 Accepted`` with the order
  id and its status URL, at once. When the orders queue is at its bound the answer is
  ``429 Too Many Requests`` with ``Retry-After``: the shop sheds load it could only
  queue without bound.
* ``POST /orders/sync``: the same work inside the request; answers ``200`` when done.
* ``GET /orders/{id}``: the order and the state and progress of each of its jobs.
* ``GET /orders/{id}/invoice.pdf``, ``GET /analytics`` (per-customer totals),
  ``GET /queue`` (the orders queue's depth and bound, and each subscriber's backlog).
"""

from __future__ import annotations

import asyncio
import html
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from offload.brokers.base import group_queue
from offload.demo.orders import CATALOGUE, BadOrder, Order, order_from_request
from offload.demo.tasks import GROUPS, ORDER_PLACED, ORDERS, app, charge_order, fulfil_now
from offload.errors import JobNotFound, QueueFull

if TYPE_CHECKING:
    from starlette.requests import Request

    from offload.demo.config import Settings
    from offload.demo.store import OrderRow, Store
    from offload.handles import JobInfo

__all__ = ["Door", "create_shop", "delivery_id"]

_json = msgspec.json.Encoder()


def _reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(body), status, headers, media_type="application/json")


def delivery_id(event_id: str, group: str) -> str:
    """The job id of ``group``'s delivery of an event (``<event id>:<group>``, as every
    broker names them)."""
    return f"{event_id}:{group}"


class Door:
    """The orders queue as last found full.

    For ``hold_s`` after a ``QueueFull`` (or its ``retry_after_s``, if shorter), orders
    are turned away with that same answer without asking the broker again: a full queue
    stays full for a moment, and turning a flood away must cost less than the work it
    sheds.
    """

    def __init__(self, hold_s: float = 0.2) -> None:
        self.hold_s = hold_s
        self._full: QueueFull | None = None
        self._until = 0.0

    def shut(self, full: QueueFull, now: float) -> None:
        """Remember that the queue was full at ``now``."""
        self._full, self._until = full, now + min(self.hold_s, full.retry_after_s)

    def closed(self, now: float) -> QueueFull | None:
        """The remembered ``QueueFull`` while it holds, else ``None``."""
        return self._full if now < self._until else None


class Shop:
    """The request handlers, over the shop's settings and database."""

    def __init__(self, settings: Settings, store: Store, dashboard: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.dashboard = dashboard
        self.door = Door()

    async def _order(self, request: Request) -> Order | Response:
        try:
            return order_from_request(
                await _body(request), app.clock.now(), request.headers.get("idempotency-key")
            )
        except BadOrder as exc:
            return _reply({"error": str(exc)}, 400)
        except ClientDisconnect:  # the client gave up before it sent the whole order
            return Response(status_code=499)

    async def place(self, request: Request) -> Response:
        """``POST /orders``: enqueue the charge and answer 202 (or 429 when full)."""
        order = await self._order(request)
        if isinstance(order, Response):
            return order
        now = asyncio.get_running_loop().time()
        full = self.door.closed(now)
        if full is not None:
            return _busy(full)
        try:
            await charge_order.options(job_id=order.id).enqueue(order)
        except QueueFull as exc:
            self.door.shut(exc, now)
            return _busy(exc)
        await asyncio.to_thread(self.store.add_order, order, "async")
        status_url = f"/orders/{order.id}"
        return _reply(
            {"order_id": order.id, "status_url": status_url, "total_cents": order.total_cents},
            202,
            {"Location": status_url},
        )

    async def place_sync(self, request: Request) -> Response:
        """``POST /orders/sync``: do all the work now, answer 200 when it is done."""
        order = await self._order(request)
        if isinstance(order, Response):
            return order
        started = asyncio.get_running_loop().time()
        await fulfil_now(order, self.settings, self.store)
        took = asyncio.get_running_loop().time() - started
        return _reply(
            {
                "order_id": order.id,
                "status_url": f"/orders/{order.id}",
                "total_cents": order.total_cents,
                "took_s": round(took, 4),
            }
        )

    async def status(self, request: Request) -> Response:
        """``GET /orders/{id}``: the order, its status, and each of its jobs."""
        order_id = request.path_params["order_id"]
        row = await asyncio.to_thread(self.store.order, order_id)
        jobs = await _jobs(order_id, row)
        if self.dashboard is not None:
            for job in jobs.values():
                if job is not None:
                    job["dashboard_url"] = f"{self.dashboard}/jobs/{job['id']}"
        if row is None and not jobs:
            return _reply({"error": f"no order {order_id}"}, 404)
        body: dict[str, Any] = {"order_id": order_id, "status": _status(row, jobs)}
        if row is not None:
            body["order"] = _order_view(row)
            if self.settings.invoice_path(order_id).exists():
                body["invoice_url"] = f"/orders/{order_id}/invoice.pdf"
        body["jobs"] = jobs
        return _reply(body)

    async def invoice(self, request: Request) -> Response:
        """``GET /orders/{id}/invoice.pdf``."""
        path = self.settings.invoice_path(request.path_params["order_id"])
        if not path.exists():
            return _reply({"error": "no invoice (yet) for this order"}, 404)
        return FileResponse(path, media_type="application/pdf")

    async def analytics(self, request: Request) -> Response:
        """``GET /analytics``: per-customer totals and the shop's summary."""
        summary = await asyncio.to_thread(self.store.summary)
        totals = await asyncio.to_thread(self.store.totals)
        return _reply({"summary": summary, "customers": totals})

    async def queue(self, request: Request) -> Response:
        """``GET /queue``: the orders queue against its bound, and subscriber backlogs."""
        return _reply(await queue_state())

    async def index(self, request: Request) -> Response:
        """``GET /``: what this is, and a form to place an order."""
        options = "".join(
            f'<option value="{sku}">{html.escape(p.name)}</option>' for sku, p in CATALOGUE.items()
        )
        base = html.escape(str(request.base_url).rstrip("/"))
        return HTMLResponse(_INDEX.format(options=options, base=base))


async def queue_state() -> dict[str, Any]:
    """Depth and bound of the orders queue; pending and running of each subscriber."""
    broker = await app.broker()
    queues = [ORDERS, *(group_queue(ORDER_PLACED, g) for g in GROUPS)]
    stats = {s.queue: s for s in await broker.stats(queues)}
    orders = stats[ORDERS].counts
    return {
        "orders": {
            "depth": orders.pending,
            "max_depth": app.queue_config(ORDERS).max_depth,
            "running": orders.running,
            "done": orders.succeeded,
        },
        "subscribers": {
            g: {
                "pending": stats[group_queue(ORDER_PLACED, g)].counts.pending,
                "running": stats[group_queue(ORDER_PLACED, g)].counts.running,
                "done": stats[group_queue(ORDER_PLACED, g)].counts.succeeded,
            }
            for g in GROUPS
        },
    }


def create_shop(settings: Settings, store: Store, dashboard: str | None = None) -> Starlette:
    """The shop as an ASGI app (its workers and mail server are started by the runner).

    ``dashboard``: the path the dashboard is mounted at, to link each job to its page.
    """
    shop = Shop(settings, store, dashboard)
    return Starlette(
        routes=[
            Route("/", shop.index),
            Route("/orders", shop.place, methods=["POST"]),
            Route("/orders/sync", shop.place_sync, methods=["POST"]),
            Route("/orders/{order_id:str}", shop.status),
            Route("/orders/{order_id:str}/invoice.pdf", shop.invoice),
            Route("/analytics", shop.analytics),
            Route("/queue", shop.queue),
        ]
    )


async def _body(request: Request) -> Any:
    """The request's order: JSON (whatever the content type says: ``curl -d`` sends JSON
    labelled as a form), a form (``customer``, ``sku``, ``qty``), or nothing."""
    raw = (await request.body()).strip()
    if not raw:
        return None
    if raw[:1] in (b"{", b"["):
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise BadOrder('send JSON: {"customer": "ada", "items": {"tea": 2}}') from None
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        try:
            return {"customer": form.get("customer"), "items": {form["sku"]: int(form["qty"])}}
        except (KeyError, ValueError):
            raise BadOrder("a form needs customer, sku and a whole-number qty") from None
    raise BadOrder('send JSON: {"customer": "ada", "items": {"tea": 2}}')


def _busy(full: QueueFull) -> Response:
    # Retry-After takes whole seconds; the exact estimate rides in the body.
    return _reply(
        {
            "error": "too many orders are waiting to be charged; retry later",
            "retry_after_s": round(full.retry_after_s, 3),
            "depth": full.depth,
            "max_depth": full.max_depth,
        },
        429,
        {"Retry-After": str(max(1, math.ceil(full.retry_after_s)))},
    )


async def _jobs(order_id: str, row: OrderRow | None) -> dict[str, Any]:
    """The order's jobs: the charge (its id is the order's), then each subscriber's
    delivery of the order's event, once it was published."""
    placed_at = row.placed_at if row is not None else None
    jobs: dict[str, Any] = {}
    charge = await _info(order_id)
    if charge is not None:
        jobs["charge"] = _job_view(charge, placed_at)
    if row is not None and row.event_id:
        for group in GROUPS:
            info = await _info(delivery_id(row.event_id, group))
            jobs[group] = None if info is None else _job_view(info, placed_at)
    return jobs


async def _info(job_id: str) -> JobInfo | None:
    try:
        return await app.job(job_id).info()
    except JobNotFound:
        return None


def _job_view(info: JobInfo, placed_at: float | None) -> dict[str, Any]:
    view: dict[str, Any] = {"id": info.id, "state": info.state.value, "attempts": info.attempts}
    if info.progress is not None:
        view["progress"] = info.progress
        view["progress_message"] = info.progress_message
    if info.started_at is not None and info.finished_at is not None:
        view["ran_s"] = round(info.finished_at - info.started_at, 4)
        if placed_at is not None:
            view["done_after_s"] = round(info.finished_at - placed_at, 4)
    if info.errors:
        view["error"] = info.errors[-1].message
    return view


def _order_view(row: OrderRow) -> dict[str, Any]:
    return {
        "customer": row.customer,
        "lines": [{"sku": li.sku, "qty": li.qty, "cents": li.total_cents} for li in row.lines],
        "total_cents": row.total_cents,
        "placed_at": row.placed_at,
        "paid_at": row.paid_at,
        "path": row.path,
    }


def _status(row: OrderRow | None, jobs: dict[str, Any]) -> str:
    states = [j["state"] if j else "queued" for j in jobs.values()]
    if "dead" in states or "cancelled" in states:
        return "needs attention"
    if row is None or row.paid_at is None:
        return "accepted: waiting to be charged"
    if row.path == "sync" or all(s == "succeeded" for s in states):
        return "complete"
    return "paid: receipt, invoice and analytics under way"


_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>offload demo: the tea shop</title>
<style>body{{font:15px system-ui;margin:2em;max-width:48em}}code{{background:#eee}}</style>
</head><body><h1>The offload Tea Shop</h1>
<p><code>POST /orders</code> answers <b>202 Accepted</b> at once; the card is charged, and the
receipt, the invoice and the sales figures are made in the background by offload workers.
<code>POST /orders/sync</code> does all of it inside the request, for comparison.</p>
<form method="post" action="orders">
<select name="customer"><option>ada</option><option>grace</option><option>alan</option></select>
buys <input name="qty" type="number" value="2" min="1" max="99" style="width:4em">
<select name="sku">{options}</select> <button>Order (202)</button>
<button formaction="orders/sync">Order and wait (sync)</button></form>
<ul><li><a href="dashboard/">the offload dashboard</a>: queues, jobs, workers, events,
schedules</li>
<li><a href="inbox/">the inbox</a>: receipts and reports, as received over SMTP</li>
<li><a href="analytics">analytics</a>: per-customer totals &middot; <a href="queue">queue</a>:
the orders queue against its bound</li></ul>
<p>From a terminal:
<code>curl -X POST {base}/orders -d '{{"customer": "ada", "items": {{"tea": 2}}}}'</code></p>
</body></html>
"""
