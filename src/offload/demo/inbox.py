"""The demo's mail server: a real SMTP server on loopback that keeps what it receives.

Receipts and reports travel over SMTP as they would in production; this server (aiosmtpd)
accepts them and keeps the newest few thousand in memory, to be read at ``/inbox/``
(HTML) and ``/inbox/messages`` (JSON).
"""

from __future__ import annotations

import asyncio
import html
import itertools
import time
from collections import deque
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any

import msgspec
from aiosmtpd.smtp import SMTP
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    import socket

    from starlette.requests import Request

__all__ = ["Inbox", "Mail", "inbox_app"]


class Mail(msgspec.Struct, kw_only=True):
    """One message the server accepted."""

    n: int
    received_at: float
    sender: str
    recipients: list[str]
    subject: str
    message_id: str
    text: str


class Inbox:
    """An SMTP server (on a socket the caller bound) and the messages it received.

    Args:
        keep: how many of the newest messages to keep (the count goes on).
    """

    def __init__(self, keep: int = 5000) -> None:
        self.total = 0
        self._mails: deque[Mail] = deque(maxlen=keep)
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        """Serve SMTP on ``sock`` (already bound) in the running loop."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="inbox.example.com", loop=loop), sock=sock
        )

    async def stop(self) -> None:
        """Stop accepting mail and close the connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: a whole message arrived."""
        msg = message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        body = msg.get_body(("plain",))
        self.total += 1
        self._mails.append(
            Mail(
                n=next(self._numbers),
                received_at=time.time(),
                sender=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                subject=str(msg["Subject"] or ""),
                message_id=str(msg["Message-ID"] or ""),
                text=body.get_content() if body is not None else "",
            )
        )
        return "250 Message accepted for delivery"

    def messages(self, limit: int | None = None, to: str | None = None) -> list[Mail]:
        """The kept messages, newest first (only those to ``to``, if given)."""
        mails = (m for m in reversed(self._mails) if to is None or to in m.recipients)
        return list(itertools.islice(mails, limit))

    def get(self, n: int) -> Mail | None:
        """Message number ``n``, if still kept."""
        return next((m for m in self._mails if m.n == n), None)


def inbox_app(inbox: Inbox) -> Starlette:
    """The inbox on the web: ``/`` (HTML, newest 50), ``/messages`` (JSON:
    ``?limit=``, ``?to=``) and ``/messages/{n}`` (one message as text)."""

    async def page(request: Request) -> Response:
        rows = "".join(
            f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(m.received_at))}</td>"
            f"<td>{html.escape(', '.join(m.recipients))}</td>"
            f'<td><a href="messages/{m.n}">{html.escape(m.subject)}</a></td></tr>'
            for m in inbox.messages(50)
        )
        return HTMLResponse(_PAGE.format(total=inbox.total, rows=rows))

    async def listing(request: Request) -> Response:
        try:
            limit = min(max(int(request.query_params.get("limit", "100")), 1), 10_000)
        except ValueError:
            return PlainTextResponse("limit must be a number", 400)
        mails = inbox.messages(limit, request.query_params.get("to"))
        body = {"total": inbox.total, "messages": mails}
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def one(request: Request) -> Response:
        mail = inbox.get(request.path_params["n"])
        if mail is None:
            return PlainTextResponse("no such message (or no longer kept)", 404)
        head = f"From: {mail.sender}\nTo: {', '.join(mail.recipients)}\nSubject: {mail.subject}"
        return PlainTextResponse(f"{head}\n\n{mail.text}")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/messages", listing),
            Route("/messages/{n:int}", one),
        ]
    )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Inbox ({total})</title>
<style>body{{font:14px system-ui;margin:2em}}td{{padding:2px 12px 2px 0}}</style></head>
<body><h1>Inbox</h1><p>{total} messages received by the demo's SMTP server (newest 50 shown;
<a href="messages">JSON</a>).</p>
<table><tr><th>received</th><th>to</th><th>subject</th></tr>{rows}</table></body></html>
"""
