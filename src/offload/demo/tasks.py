"""The shop's background work: its offload App, one task, three subscribers, a schedule.

::

    POST /orders --202--> charge_order        queue "orders", bounded: 429 when full
                            | charges the card (the card processor sets the pace)
                            v publishes
                          order.placed --> receipt    e-mail over SMTP     (thread)
                                       --> invoice    PDF, CPU-bound       (process pool)
                                       --> analytics  per-customer totals  (in order per key)
    every minute: nightly_report --> e-mail to ops

``POST /orders/sync`` does the same work inside the request: :func:`fulfil_now`.
Every step is idempotent per order (the charge, the receipt's Message-ID, the invoice
file, the analytics count), because delivery is at-least-once: a job whose worker dies
runs again.
"""

from __future__ import annotations

import asyncio
import os

from offload import App, progress_sync
from offload.demo import invoice, mail
from offload.demo.config import Settings
from offload.demo.orders import Order  # noqa: TC001  (offload reads the hints at run time)
from offload.demo.payments import provider
from offload.demo.store import Store, store_at

__all__ = [
    "GROUPS",
    "MAX_DEPTH",
    "ORDERS",
    "ORDER_PLACED",
    "app",
    "charge_order",
    "count_sale",
    "fulfil_now",
    "nightly_report",
    "render_invoice",
    "send_receipt",
]

ORDERS = "orders"
ORDER_PLACED = "order.placed"
#: The subscriber groups of ``order.placed``, in the order the status page lists them.
GROUPS = ("receipt", "invoice", "analytics")
#: Orders waiting to be charged, at most (about four seconds of the processor's pace).
MAX_DEPTH = 200

app = App(default_queue="shop")
app.queue(ORDERS, max_depth=MAX_DEPTH, when_full="reject")


def _store() -> Store:
    return store_at(Settings.from_env().shop_db)


@app.task(
    name="shop.charge_order",
    queue=ORDERS,
    # Twice the processor's limit: two charges at the processor and two waiting their turn
    # in this process, so it never idles while the next job is claimed.
    concurrency=2 * provider.max_concurrent,
    retries=5,
)
async def charge_order(order: Order) -> str:
    """Charge the card, then announce the order: publish ``order.placed``.

    Returns the event's id (the status page finds the subscribers' jobs by it).
    """
    charge_id = await provider.charge(order.id, order.total_cents)
    event_id = await app.publish(ORDER_PLACED, order)
    paid_at = app.clock.now()
    await asyncio.to_thread(_store().mark_paid, order, "async", charge_id, paid_at, event_id)
    return event_id


@app.on(ORDER_PLACED, group="receipt", retries=3)
def send_receipt(order: Order) -> None:
    """E-mail the receipt (a blocking SMTP conversation: runs in a worker thread)."""
    settings = Settings.from_env()
    mail.send(settings, mail.receipt(order, settings))


@app.on(ORDER_PLACED, group="invoice", executor="process", retries=2, timeout=60)
def render_invoice(order: Order) -> int:
    """Typeset the invoice PDF (CPU-bound: runs in a child process), reporting each page
    as progress. Returns its size in bytes."""
    pdf = invoice.render(order, progress_sync)
    _write(Settings.from_env().invoice_path(order.id), pdf)
    return len(pdf)


@app.on(ORDER_PLACED, group="analytics", key=lambda order: order.customer)
async def count_sale(order: Order) -> None:
    """Add the order to its customer's totals. Keyed by customer: one customer's orders
    are counted one at a time, in the order they were placed."""
    await asyncio.to_thread(_store().count_sale, order)


@app.every(minutes=1, name="shop.nightly_report")
async def nightly_report() -> str:
    """E-mail the sales report to ops (nightly in a real shop; every minute here).
    Returns its subject."""
    store = _store()
    summary = await asyncio.to_thread(store.summary)
    top = (await asyncio.to_thread(store.totals))[:5]
    msg = mail.report(summary, top, app.clock.now())
    await asyncio.to_thread(mail.send, Settings.from_env(), msg)
    return str(msg["Subject"])


async def fulfil_now(order: Order, settings: Settings, store: Store) -> None:
    """Everything the background does for an order, done here and now (``/orders/sync``):
    charge, render the invoice, send the receipt, count the sale."""
    charge_id = await provider.charge(order.id, order.total_cents)
    await asyncio.to_thread(store.mark_paid, order, "sync", charge_id, app.clock.now(), None)
    pdf = await asyncio.to_thread(invoice.render, order)
    await asyncio.to_thread(_write, settings.invoice_path(order.id), pdf)
    await asyncio.to_thread(mail.send, settings, mail.receipt(order, settings))
    await asyncio.to_thread(store.count_sale, order)


def _write(path: os.PathLike[str], data: bytes) -> None:
    """Write a file whole or not at all (a reader never sees half an invoice)."""
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
