"""The first minute: place a few orders as a customer would, and follow them.

Two orders go to ``POST /orders`` and come back ``202`` at once; the tour then follows
each through its jobs (charge, receipt, invoice, analytics) on the status page. One goes
to ``POST /orders/sync``, which answers only when all of it is done.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from offload.demo.client import Client
from offload.demo.views import duration

if TYPE_CHECKING:
    from rich.console import Console

    from offload.demo.runner import Demo

__all__ = ["ORDERS", "tour"]

#: (customer, items, endpoint) of the orders the tour places.
ORDERS: list[tuple[str, dict[str, int], str]] = [
    ("ada", {"tea": 2, "mug": 1}, "/orders"),
    ("grace", {"pot": 1, "green": 2}, "/orders"),
    ("alan", {"honey": 3}, "/orders/sync"),
]


def _basket(items: dict[str, int]) -> str:
    return ", ".join(f"{q} {sku}" for sku, q in items.items())


async def _place(client: Client, customer: str, items: dict[str, int], path: str) -> Any:
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = msgspec.json.encode({"customer": customer, "items": items})
    response = await client.post(path, body)
    took = loop.time() - started
    answer = response.json()
    status = {200: "200 OK", 202: "202 Accepted"}.get(response.status, str(response.status))
    return status, took, answer


async def _follow(client: Client, order_id: str, timeout_s: float) -> dict[str, Any]:
    """The order's status once complete (or as it is when ``timeout_s`` runs out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status: dict[str, Any] = (await client.get(f"/orders/{order_id}")).json()  # type: ignore[assignment]
        if status.get("status") in ("complete", "needs attention") or loop.time() > deadline:
            return status
        await asyncio.sleep(0.05)


def _timeline(status: dict[str, Any]) -> str:
    steps = []
    for name, job in status.get("jobs", {}).items():
        if job is None:
            steps.append(f"{name} waiting")
        elif job.get("done_after_s") is not None:
            steps.append(f"{name} {duration(job['done_after_s'])}")
        else:
            steps.append(f"{name} {job['state']}")
    return " · ".join(steps)


async def tour(demo: Demo, console: Console, timeout_s: float = 30.0) -> bool:
    """Place the tour's orders and narrate them; True when every one completed."""
    client = Client(demo.shop_url, 4)
    console.print("Placing three orders, as customers would:\n")
    followed = []
    try:
        for customer, items, path in ORDERS:
            status, took, answer = await _place(client, customer, items, path)
            order_id = answer.get("order_id", "?")
            console.print(
                f"  POST {path:<12} [bold]{status:<12}[/] in {duration(took):>6}  "
                f"order [cyan]{order_id}[/] {customer}: {_basket(items)}"
            )
            if path == "/orders":
                followed.append(order_id)
        console.print("\nMeanwhile the workers did the rest (times since each order was placed):\n")
        done = True
        for order_id in followed:
            status = await _follow(client, order_id, timeout_s)
            done = done and status.get("status") == "complete"
            console.print(f"  [cyan]{order_id}[/] {status.get('status')}: {_timeline(status)}")
    finally:
        await client.close()
    _hints(demo, console, followed[0] if followed else None)
    return done


def _hints(demo: Demo, console: Console, order_id: str | None) -> None:
    url = demo.shop_url
    console.print("\nLook around:")
    if order_id:
        console.print(f"  the order, its jobs:  curl {url}/orders/{order_id}")
        console.print(f"  its invoice:          {url}/orders/{order_id}/invoice.pdf")
    console.print(f"  receipts and reports: {demo.inbox_url}  (a sales report every minute)")
    if demo.dashboard_url:
        console.print(f"  queues, jobs, events: {demo.dashboard_url}")
    console.print(f"  another order:        curl -X POST {url}/orders")
