"""Subscribers for the event tests (module-level: workers import them by name)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec

from offload import App

app = App("memory://", default_queue="ev-jobs")
records: dict[str, list[Any]] = defaultdict(list)


class OrderPlaced(msgspec.Struct):
    order_id: int
    customer_id: int
    total: float = 0.0


@dataclass
class Refund:
    order_id: int
    amount: float


class Signup(TypedDict):
    user: str


@app.on("order.placed")
async def send_receipt(event: OrderPlaced) -> None:
    assert isinstance(event, OrderPlaced)
    records["send_receipt"].append(event.order_id)


@app.on("order.placed", group="analytics", key=lambda e: e.customer_id)
async def record_sale(event: OrderPlaced) -> None:
    records["analytics"].append((event.customer_id, event.order_id))


@app.on("order.placed", group="audit")
def audit(event: dict[str, Any]) -> None:
    records["audit"].append(event["order_id"])


@app.on("refund.issued")
async def refund(event: Refund) -> None:
    assert isinstance(event, Refund)
    records["refund"].append(event.amount)


@app.on("user.signup")
async def welcome(event: Signup) -> None:
    records["welcome"].append(event["user"])


@app.on("ledger.entry", group="ledger", key=lambda e: e["account"])
async def post_entry(event: dict[str, Any]) -> None:
    await asyncio.sleep(random.uniform(0, 0.002))
    records["ledger"].append((event["account"], event["seq"]))


@app.on("metrics.tick", group="broken")
async def broken(event: dict[str, Any]) -> None:
    await asyncio.sleep(0.05)
    raise RuntimeError("this group is broken")


@app.on("metrics.tick", group="healthy")
async def healthy(event: dict[str, Any]) -> None:
    records["healthy"].append(event["n"])


@app.task(name="ev.job")
async def plain_job(n: int) -> int:
    records["job"].append(n)
    return n
