"""The dashboard's guard, as one ASGI middleware in front of every route.

In order, for each request:

1. the ``Host`` header must be allowed (stops DNS rebinding of a loopback dashboard);
2. only GET, HEAD and POST, with a bounded query string and body;
3. authentication: a bearer token, the session cookie a token login sets, or basic auth
   (401 otherwise; ``/login`` and ``/static/`` are public);
4. every POST passes the CSRF check: its ``Origin`` (or ``Referer``) must be this site,
   and it must carry the CSRF token (header ``X-CSRF-Token`` or form field
   ``csrf_token``) that matches the signed cookie; a request with a bearer token needs no
   CSRF token, since a browser never adds that header by itself. In read-only mode every
   POST but the login is refused;
5. every response gets a Content-Security-Policy with a fresh nonce, and headers that
   forbid framing, sniffing and caching.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import secrets
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import msgspec
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from offload.dashboard.config import DashboardConfig

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "Guard", "SecurityMiddleware", "relative_path"]

CSRF_COOKIE = "offload_csrf"
SESSION_COOKIE = "offload_session"
MAX_BODY = 64 * 1024
MAX_QUERY = 2048
_PUBLIC = ("/login", "/static/")


class Guard:
    """Authentication and CSRF tokens for one dashboard (no global state)."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        seed = config.secret or config.token
        self._key = (
            hashlib.sha256(b"offload-dashboard:" + seed.encode()).digest()
            if seed
            else secrets.token_bytes(32)
        )

    def _sign(self, what: str) -> str:
        return hmac.new(self._key, what.encode(), hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        """The session cookie a successful token login sets (never the token itself)."""
        return self._sign("session")

    def csrf_for(self, cookie: str) -> str:
        """The CSRF token that goes with a CSRF cookie value."""
        return self._sign("csrf:" + cookie)

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison with the configured token."""
        token = self.config.token
        return token is not None and hmac.compare_digest(given.encode(), token.encode())

    def authenticate(self, headers: Headers, cookies: dict[str, str]) -> str | None:
        """How the request proved itself (``bearer``, ``session``, ``basic``, or ``open``
        when no authentication is configured), or ``None``."""
        if not self.config.authenticated:
            return "open"
        scheme, _, value = headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token_matches(value.strip()):
            return "bearer"
        if scheme == "basic" and self._basic_matches(value.strip()):
            return "basic"
        session = cookies.get(SESSION_COOKIE)
        if self.config.token and session and hmac.compare_digest(session, self.session_value()):
            return "session"
        return None

    def _basic_matches(self, value: str) -> bool:
        if self.config.basic_auth is None:
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        want_user, want_password = self.config.basic_auth
        user_ok = hmac.compare_digest(user.encode(), want_user.encode())
        return hmac.compare_digest(password.encode(), want_password.encode()) and user_ok

    def host_allowed(self, host: str | None) -> bool:
        """True when the ``Host`` header names this dashboard."""
        allowed = self.config.hosts()
        if allowed is None:
            return True
        if not host:
            return False
        return _hostname(host) in allowed

    def origin_allowed(self, origin: str, host: str) -> bool:
        """True for this site's own origin (by host and port) or a configured one."""
        if origin in self.config.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def relative_path(scope: Scope) -> str:
    """The request path below the dashboard's mount point."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class SecurityMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = cookie_parser(headers.get("cookie", ""))
        problem = self._precheck(scope, headers)
        if problem is not None:
            await _plain(send, *problem)
            return
        path = relative_path(scope)
        cookie = cookies.get(CSRF_COOKIE, "")
        fresh = None if _token_shaped(cookie) else secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(18)
        state = scope.setdefault("state", {})
        auth = self.guard.authenticate(headers, cookies)
        state.update(
            csp_nonce=nonce,
            csrf_token=self.guard.csrf_for(fresh or cookie),
            auth=auth,
            read_only=self.guard.config.read_only,
        )
        send = _decorate(send, scope, nonce, fresh, static=path.startswith("/static/"))
        if auth is None and not path.startswith(_PUBLIC):
            await self._unauthorized(path, send)
            return
        if scope["method"] == "POST":
            body, refusal = await self._check_post(scope, headers, cookie, auth, path, receive)
            if refusal is not None:
                await _plain(send, *refusal)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    def _precheck(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        if not self.guard.host_allowed(headers.get("host")):
            return 400, (
                "Invalid Host header. An unauthenticated dashboard answers only to "
                "127.0.0.1/localhost; configure a token or allowed_hosts."
            )
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return 405, "Method not allowed."
        if len(scope.get("query_string", b"")) > MAX_QUERY:
            return 414, "Query string too long."
        return None

    async def _unauthorized(self, path: str, send: Send) -> None:
        extra: list[tuple[bytes, bytes]] = []
        if self.guard.config.basic_auth is not None:
            extra.append((b"www-authenticate", b'Basic realm="offload dashboard", charset="UTF-8"'))
        if path.startswith("/api/"):
            body = msgspec.json.encode({"error": "authentication required"})
            await _send(send, 401, body, b"application/json", extra)
            return
        login = "" if self.guard.config.token is None else ' <a href="login">Log in</a>.'
        page = f"<!doctype html><title>401</title><p>Authentication required.{login}</p>"
        await _send(send, 401, page.encode(), b"text/html; charset=utf-8", extra)

    async def _check_post(
        self,
        scope: Scope,
        headers: Headers,
        cookie: str,
        auth: str | None,
        path: str,
        receive: Receive,
    ) -> tuple[bytes, tuple[int, str] | None]:
        if self.guard.config.read_only and path != "/login":
            return b"", (403, "This dashboard is read-only.")
        source = headers.get("origin") or headers.get("referer")
        if source is not None and not self.guard.origin_allowed(source, headers.get("host", "")):
            return b"", (403, "Cross-origin request refused (Origin does not match).")
        body = await _read_body(headers, receive)
        if body is None:
            return b"", (413, f"Request body over {MAX_BODY} bytes.")
        if auth == "bearer":
            return body, None
        given = headers.get("x-csrf-token") or _form_token(headers, body)
        expected = self.guard.csrf_for(cookie) if _token_shaped(cookie) else ""
        if not given or not expected or not hmac.compare_digest(given, expected):
            return b"", (403, "CSRF token missing or invalid; reload the page and try again.")
        return body, None


def _token_shaped(value: str) -> bool:
    return 32 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()


def _form_token(headers: Headers, body: bytes) -> str:
    if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return ""
    values = parse_qs(body.decode("latin-1"), max_num_fields=1000).get("csrf_token", [])
    return values[0] if len(values) == 1 else ""


async def _read_body(headers: Headers, receive: Receive) -> bytes | None:
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _decorate(send: Send, scope: Scope, nonce: str, fresh: str | None, *, static: bool) -> Send:
    root = scope.get("root_path", "") or "/"
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    csp = (
        f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            h = MutableHeaders(scope=message)
            h["content-security-policy"] = csp
            h["x-content-type-options"] = "nosniff"
            h["x-frame-options"] = "DENY"
            h["referrer-policy"] = "same-origin"
            h["cross-origin-opener-policy"] = "same-origin"
            h["cross-origin-resource-policy"] = "same-origin"
            if not static:
                h["cache-control"] = "no-store"
            if fresh is not None:
                h.append(
                    "set-cookie",
                    f"{CSRF_COOKIE}={fresh}; Path={root}; HttpOnly; SameSite=Strict{secure}",
                )
        await send(message)

    return wrapped


async def _plain(send: Send, status: int, text: str) -> None:
    await _send(send, status, html.escape(text).encode(), b"text/plain; charset=utf-8", [])


async def _send(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})
