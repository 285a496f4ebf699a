"""A small HTTP/1.1 client for the load generator: keep-alive connections, nothing else.

General clients (httpx) spend a millisecond or more of CPU per request once hundreds are
in flight, so a generator built on one measures itself. This one writes a request and
reads ``status``, headers and a ``Content-Length`` body over pooled asyncio streams.
A request that is cancelled (its deadline passed) closes its connection. A connection
idle longer than the server keeps one open (uvicorn: 5 s) is not reused, since the server
may be closing it just as the request goes out.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import msgspec

__all__ = ["Client", "HttpError", "Response"]


class HttpError(Exception):
    """No answer: the connection failed or the server spoke something else."""


class Response(msgspec.Struct, frozen=True):
    """A response: its status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        """The body decoded as JSON."""
        return msgspec.json.decode(self.body)


_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]

#: Idle connections older than this are closed rather than reused.
MAX_IDLE_S = 4.0


class Client:
    """Requests to one ``http://host:port`` over at most ``max_connections`` connections
    (further requests wait for a free one)."""

    def __init__(self, base_url: str, max_connections: int = 256) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http://host:port URL, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._authority = parts.netloc.encode()
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[tuple[float, _Stream]] = []

    async def get(self, path: str) -> Response:
        """``GET path``."""
        return await self.request(b"GET", path, b"")

    async def post(self, path: str, body: bytes) -> Response:
        """``POST path`` with a JSON ``body``."""
        return await self.request(b"POST", path, body)

    async def request(self, method: bytes, path: str, body: bytes) -> Response:
        """Send one request and read its response.

        Raises:
            HttpError: no connection, or an answer that is not HTTP/1.1 with a length.
        """
        head = (
            b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (method, path.encode(), self._authority, len(body))
        )
        async with self._slots:
            stream = self._reusable() or await self._connect()
            try:
                stream[1].write(head + body)
                response = await _read(stream[0])
            except BaseException:
                stream[1].close()
                raise
            if response.headers.get("connection") == "close":
                stream[1].close()
            else:
                self._idle.append((asyncio.get_running_loop().time(), stream))
            return response

    def _reusable(self) -> _Stream | None:
        """The most recently used idle connection that is fresh and open, if any."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            since, stream = self._idle.pop()
            if now - since < MAX_IDLE_S and not stream[0].at_eof():
                return stream
            stream[1].close()
        return None

    async def _connect(self) -> _Stream:
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    async def close(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for _, (_, writer) in idle:
            writer.close()


async def _read(reader: asyncio.StreamReader) -> Response:
    try:
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        raise HttpError(f"the connection broke: {exc!r}") from exc
    return Response(int(parts[1]), headers, body)
