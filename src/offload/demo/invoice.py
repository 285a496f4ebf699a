"""Invoices: an order typeset into a small, real PDF (CPU-bound work).

A real shop renders invoices with a typesetting library (WeasyPrint, ReportLab), which
spends tens to hundreds of milliseconds of pure-Python CPU per page. The layout pass here
stands in for that cost with a fixed amount of pure-Python work per page, so it behaves
like the real thing: it holds the GIL while it runs, which is why the demo renders
invoices in a process pool (``executor="process"``) rather than on the event loop or in
threads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.demo.orders import Order

__all__ = ["LAYOUT_PASSES", "PAGES", "render"]

#: Pages per invoice: the summary, the lines, the terms.
PAGES = 3
#: Pure-Python layout passes per page: about 3 ms of CPU per page, 10 ms per invoice.
LAYOUT_PASSES = 250

Progress = Callable[[float, str], None]


def render(order: Order, progress: Progress | None = None, passes: int = LAYOUT_PASSES) -> bytes:
    """The invoice of ``order`` as PDF bytes; ``progress(fraction, message)`` per page."""
    pages = [_summary(order), _lines(order), _terms(order)]
    streams = []
    for n, text in enumerate(pages, 1):
        checksum = _layout(text, passes)
        text = [*text, "", f"page {n} of {len(pages)}    layout {checksum:08x}"]
        streams.append(_content(text))
        if progress is not None:
            progress(n / len(pages), f"page {n}/{len(pages)}")
    return _pdf(streams)


def _money(cents: int) -> str:
    return f"EUR {cents / 100:,.2f}"


def _summary(order: Order) -> list[str]:
    day = dt.datetime.fromtimestamp(order.placed_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "The offload Tea Shop",
        "",
        f"Invoice INV-{order.id}",
        f"Date: {day}",
        f"Customer: {order.customer} <{order.email}>",
        "",
        f"Total due: {_money(order.total_cents)} (paid by card)",
    ]


def _lines(order: Order) -> list[str]:
    rows = [f"{li.qty:>3} x {li.name:<28} {_money(li.total_cents):>14}" for li in order.lines]
    return ["Items", "", *rows, "", f"{'Total':<34} {_money(order.total_cents):>14}"]


def _terms(order: Order) -> list[str]:
    return [
        "Terms",
        "",
        "Paid in full. Prices include VAT.",
        f"Questions about order {order.id}? Reply to your receipt.",
    ]


def _layout(text: list[str], passes: int) -> int:
    """The stand-in for typesetting: ``passes`` pure-Python passes over the page."""
    h = 2166136261
    for _ in range(passes):
        for line in text:
            for ch in line:
                h = ((h ^ ord(ch)) * 16777619) & 0xFFFFFFFF
    return h


def _escape(text: str) -> str:
    safe = text.encode("latin-1", "replace").decode("latin-1")
    return safe.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(lines: list[str]) -> bytes:
    ops = ["BT", "/F1 11 Tf", "14 TL", "56 780 Td"]
    ops += [f"({_escape(line)}) '" for line in lines]
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def _pdf(streams: list[bytes]) -> bytes:
    """A minimal PDF 1.4 file: catalog, page tree, a Courier font, one page per stream."""
    n = len(streams)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>",
    ]
    for i, stream in enumerate(streams):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {5 + 2 * i} 0 R"
            " /Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
