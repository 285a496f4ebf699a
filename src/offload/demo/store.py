"""The shop's own database: orders and per-customer sales totals.

A SQLite file beside the broker's (as a real service has its own database besides its
queue). Every thread and process that uses it opens its own connection; calls are short
transactions, so async code runs them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from typing import TYPE_CHECKING

import msgspec

from offload.demo.orders import Line

if TYPE_CHECKING:
    from pathlib import Path

    from offload.demo.orders import Order

__all__ = ["CustomerTotal", "OrderRow", "Store", "Summary", "store_at"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id          TEXT PRIMARY KEY,
    customer    TEXT NOT NULL,
    lines       TEXT NOT NULL,          -- JSON list of Line
    total_cents INTEGER NOT NULL,
    placed_at   REAL NOT NULL,
    path        TEXT NOT NULL,          -- 'async' (202, worked in the background) or 'sync'
    charge_id   TEXT,
    paid_at     REAL,
    event_id    TEXT                    -- the order.placed event, once published
);
CREATE TABLE IF NOT EXISTS counted (order_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS customer_totals (
    customer    TEXT PRIMARY KEY,
    orders      INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    last_order  TEXT NOT NULL,
    last_placed REAL NOT NULL
);
"""

_lines = msgspec.json.Decoder(list[Line])


class OrderRow(msgspec.Struct, kw_only=True):
    """An order as the shop's database has it."""

    id: str
    customer: str
    lines: list[Line]
    total_cents: int
    placed_at: float
    path: str
    charge_id: str | None
    paid_at: float | None
    event_id: str | None


class CustomerTotal(msgspec.Struct, kw_only=True):
    """What one customer has bought (the analytics subscriber keeps it)."""

    customer: str
    orders: int
    total_cents: int
    last_order: str
    last_placed: float


class Summary(msgspec.Struct, kw_only=True):
    """The shop's figures so far: orders taken, paid, counted by analytics, revenue."""

    orders: int
    paid: int
    counted: int
    revenue_cents: int


class Store:
    """The shop's database at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # Each thread uses only its own connection; check_same_thread=False lets
            # close() (in whichever thread stops the demo) close them all.
            db = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._open.append(db)
        return db

    def add_order(self, order: Order, path: str) -> None:
        """Record an order the shop took (again: nothing changes)."""
        self._db().execute(
            "INSERT OR IGNORE INTO orders (id, customer, lines, total_cents, placed_at, path)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                order.id,
                order.customer,
                msgspec.json.encode(order.lines),
                order.total_cents,
                order.placed_at,
                path,
            ),
        )

    def mark_paid(
        self, order: Order, path: str, charge_id: str, paid_at: float, event_id: str | None
    ) -> None:
        """Record the charge (and the event announcing it), adding the order if needed."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            self.add_order(order, path)
            db.execute(
                "UPDATE orders SET charge_id = ?, paid_at = ?, event_id = ? WHERE id = ?",
                (charge_id, paid_at, event_id, order.id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def order(self, order_id: str) -> OrderRow | None:
        """One order, or ``None``."""
        row = (
            self._db()
            .execute(
                "SELECT id, customer, lines, total_cents, placed_at, path, charge_id, paid_at,"
                " event_id FROM orders WHERE id = ?",
                (order_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        fields = dict(zip(OrderRow.__struct_fields__, row, strict=True))
        fields["lines"] = _lines.decode(fields["lines"])
        return OrderRow(**fields)

    def count_sale(self, order: Order) -> bool:
        """Add ``order`` to its customer's totals, once (a redelivery changes nothing).

        Returns False when the order had been counted already.
        """
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            new = db.execute(
                "INSERT OR IGNORE INTO counted (order_id) VALUES (?)", (order.id,)
            ).rowcount
            if new:
                db.execute(
                    "INSERT INTO customer_totals VALUES (?, 1, ?, ?, ?)"
                    " ON CONFLICT (customer) DO UPDATE SET orders = orders + 1,"
                    " total_cents = total_cents + excluded.total_cents,"
                    " last_order = excluded.last_order, last_placed = excluded.last_placed",
                    (order.customer, order.total_cents, order.id, order.placed_at),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return bool(new)

    def totals(self) -> list[CustomerTotal]:
        """Every customer's totals, biggest spender first."""
        rows = self._db().execute(
            "SELECT customer, orders, total_cents, last_order, last_placed"
            " FROM customer_totals ORDER BY total_cents DESC, customer"
        )
        return [
            CustomerTotal(**dict(zip(CustomerTotal.__struct_fields__, r, strict=True)))
            for r in rows
        ]

    def summary(self) -> Summary:
        """Orders taken and paid, orders counted by analytics, and the revenue counted."""
        db = self._db()
        orders, paid = db.execute("SELECT count(*), count(paid_at) FROM orders").fetchone()
        counted, revenue = db.execute(
            "SELECT coalesce(sum(orders), 0), coalesce(sum(total_cents), 0) FROM customer_totals"
        ).fetchone()
        return Summary(orders=orders, paid=paid, counted=counted, revenue_cents=revenue)

    def close(self) -> None:
        """Close every connection (call once no thread uses the store any more)."""
        with self._lock:
            dbs, self._open = self._open, []
        for db in dbs:
            db.close()
        self._local = threading.local()


@functools.cache
def store_at(path: Path) -> Store:
    """The process's :class:`Store` for ``path`` (tasks share one, with per-thread
    connections, instead of opening the database for every job)."""
    return Store(path)
