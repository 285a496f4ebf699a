"""The mail the shop sends: receipts and the nightly report, over plain SMTP."""

from __future__ import annotations

import datetime as dt
import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.demo.config import Settings
    from offload.demo.orders import Order
    from offload.demo.store import CustomerTotal, Summary

__all__ = ["receipt", "report", "send"]

SHOP = "The offload Tea Shop <shop@example.com>"
OPS = "ops@example.com"


def _money(cents: int) -> str:
    return f"EUR {cents / 100:,.2f}"


def receipt(order: Order, settings: Settings) -> EmailMessage:
    """The receipt of ``order``; its Message-ID is the order's, so a receipt sent twice
    (a redelivered job) is recognisable as the same one."""
    msg = EmailMessage()
    msg["From"] = SHOP
    msg["To"] = order.email
    msg["Subject"] = f"Receipt for order {order.id}"
    msg["Message-ID"] = f"<receipt-{order.id}@shop.example.com>"
    lines = [f"  {li.qty} x {li.name:<28} {_money(li.total_cents):>12}" for li in order.lines]
    msg.set_content(
        "\n".join(
            [
                f"Hello {order.customer},",
                "",
                "thank you for your order. We charged your card:",
                "",
                *lines,
                f"  {'Total':<32} {_money(order.total_cents):>12}",
                "",
                f"Your invoice: {settings.shop_url}/orders/{order.id}/invoice.pdf",
                f"Your order:   {settings.shop_url}/orders/{order.id}",
            ]
        )
    )
    return msg


def report(summary: Summary, top: list[CustomerTotal], at: float) -> EmailMessage:
    """The nightly sales report (every minute in the demo)."""
    when = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    msg = EmailMessage()
    msg["From"] = SHOP
    msg["To"] = OPS
    revenue = _money(summary.revenue_cents)
    msg["Subject"] = f"Sales report {when}: {summary.counted} orders, {revenue}"
    rows = [f"  {c.customer:<10} {c.orders:>6} orders {_money(c.total_cents):>14}" for c in top]
    msg.set_content(
        "\n".join(
            [
                f"Orders taken: {summary.orders}, paid: {summary.paid}, "
                f"counted by analytics: {summary.counted}.",
                f"Revenue counted: {_money(summary.revenue_cents)}.",
                "",
                "Top customers:",
                *rows,
            ]
        )
    )
    return msg


def send(settings: Settings, msg: EmailMessage) -> None:
    """Deliver ``msg`` to the demo's SMTP server (blocking: run it in a thread).

    Raises:
        OSError / smtplib.SMTPException: the server could not be reached or refused it.
    """
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, local_hostname="shop.example.com", timeout=10
    ) as smtp:
        smtp.send_message(msg)
