"""What the shop sells and what an order is.

A tea shop with five products. An order names a customer and quantities; the shop prices
it from its catalogue (never from the client) and gives it an id. Orders travel as job
arguments and event payloads, so they are msgspec structs: typed on both ends, JSON on
the wire.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CATALOGUE",
    "CUSTOMERS",
    "BadOrder",
    "Line",
    "Order",
    "Product",
    "new_order",
    "order_from_request",
    "random_request",
]


class Product(msgspec.Struct, frozen=True):
    """One thing the shop sells."""

    sku: str
    name: str
    price_cents: int


CATALOGUE: dict[str, Product] = {
    p.sku: p
    for p in (
        Product("tea", "Assam tea, 250 g", 650),
        Product("green", "Sencha green tea, 100 g", 890),
        Product("mug", "Stoneware mug", 1200),
        Product("pot", "Teapot, 1 l", 3400),
        Product("honey", "Heather honey, 340 g", 900),
    )
}

#: The customers the demo's scenario and load generator buy as.
CUSTOMERS = ("ada", "alan", "barbara", "donald", "edsger", "frances", "grace", "john", "ken")

MAX_LINES = 20
MAX_QTY = 99
_CUSTOMER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


class BadOrder(ValueError):
    """The request does not describe an order the shop can take (HTTP 400)."""


class Line(msgspec.Struct, frozen=True):
    """One line of an order, priced when the order was placed."""

    sku: str
    name: str
    qty: int
    price_cents: int

    @property
    def total_cents(self) -> int:
        """This line's price times its quantity."""
        return self.qty * self.price_cents


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the shop accepted it: priced, with an id and a time."""

    id: str
    customer: str
    email: str
    lines: list[Line]
    total_cents: int
    placed_at: float


def new_order(
    customer: str, items: Mapping[str, int], placed_at: float, order_id: str | None = None
) -> Order:
    """Price ``items`` (sku -> quantity) for ``customer``.

    Raises:
        BadOrder: a malformed customer name, an unknown product, or a bad quantity.
    """
    if not _CUSTOMER.match(customer):
        raise BadOrder("customer: 1-40 characters from a-z, 0-9, '.', '_' and '-'")
    if not items or len(items) > MAX_LINES:
        raise BadOrder(f'items: between 1 and {MAX_LINES} products, e.g. {{"tea": 2}}')
    lines = []
    for sku, qty in items.items():
        product = CATALOGUE.get(sku)
        if product is None:
            raise BadOrder(f"unknown product {sku!r}; the shop sells {', '.join(CATALOGUE)}")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= MAX_QTY:
            raise BadOrder(f"quantity of {sku!r} must be a whole number from 1 to {MAX_QTY}")
        lines.append(Line(sku, product.name, qty, product.price_cents))
    return Order(
        id=order_id or uuid.uuid4().hex[:10],
        customer=customer,
        email=f"{customer}@example.com",
        lines=lines,
        total_cents=sum(line.total_cents for line in lines),
        placed_at=placed_at,
    )


def order_from_request(body: Any, placed_at: float, idempotency_key: str | None = None) -> Order:
    """An order from a decoded request body: ``{"customer": ..., "items": {sku: qty}}``.

    An empty body buys a random basket for a random customer (handy with ``curl``). An
    ``Idempotency-Key`` makes the order id a function of the key, so a client that
    retries a POST gets the same order back instead of a second one.

    Raises:
        BadOrder: the body is not such an object.
    """
    if body is None or body == {}:
        body = random_request(random.Random())
    if not isinstance(body, dict):
        raise BadOrder('send a JSON object: {"customer": "ada", "items": {"tea": 2}}')
    customer, items = body.get("customer"), body.get("items")
    if not isinstance(customer, str) or not isinstance(items, dict):
        raise BadOrder('send a JSON object: {"customer": "ada", "items": {"tea": 2}}')
    order_id = None
    if idempotency_key:
        order_id = hashlib.sha256(idempotency_key.encode()).hexdigest()[:10]
    return new_order(customer, items, placed_at, order_id)


def random_request(rng: random.Random) -> dict[str, Any]:
    """A plausible order body: a known customer buying one to three products."""
    skus = rng.sample(sorted(CATALOGUE), rng.randint(1, 3))
    return {"customer": rng.choice(CUSTOMERS), "items": {s: rng.randint(1, 3) for s in skus}}
