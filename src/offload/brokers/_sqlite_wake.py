"""Wake-ups for the SQLite broker: SQLite has no LISTEN/NOTIFY, so we bring our own.

Inside one process, every broker on the same database file shares one :class:`WakeHub`,
whose :class:`~offload.brokers._wakeup.Notifier` wakes waiting claims and result waits
the moment a write commits.

Across processes on one machine, a waiting claim (or result wait) listens on a Unix
datagram socket in a directory beside the database, ``<db>.wake/<pid>-<n>.sock``; every
write that may wake someone (enqueue, settle, publish, ...) sends one byte to each socket
listed there. The listing is cached for half a second, and a socket nobody is bound to
(its process died) is removed by the first sender that finds it so.

Pings are hints: a waiter always re-checks the database, and when the ping cannot work
(no Unix sockets, an unwritable directory) waiters fall back to adaptive polling, which
is always on. A process binds its socket on its first wait and keeps it until the broker
closes; it reads it only while something waits, so a busy worker is not interrupted.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

from offload.brokers._wakeup import Notifier
from offload.clock import system_clock

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator

__all__ = ["WakeHub", "acquire_hub", "release_hub"]

log = logging.getLogger(__name__)

#: How long a sender trusts its listing of the wake directory.
LISTING_TTL_S = 0.5
#: Longest socket path bound directly; longer ones go through /proc/self/fd (Linux).
_MAX_SUN_PATH = 100
_PING = b"\x01"

_serial = itertools.count(1)
_hubs: dict[tuple[int, str], WakeHub] = {}
_hubs_lock = threading.Lock()


def acquire_hub(db_path: str) -> WakeHub:
    """The hub of this process for ``db_path`` (shared by its brokers; counted)."""
    key = (os.getpid(), os.path.realpath(db_path))
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = WakeHub(key[1])
        hub.refs += 1
        return hub


def release_hub(hub: WakeHub) -> None:
    """Drop one reference; the last one closes the hub's sockets."""
    with _hubs_lock:
        hub.refs -= 1
        if hub.refs > 0:
            return
        _hubs.pop((hub.pid, hub.db_path), None)
    hub.close()


class WakeHub:
    """The wake-up channel of one database file in one process."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.dir = db_path + ".wake"
        self.pid = os.getpid()
        self.notifier = Notifier()
        self.refs = 0
        self._lock = threading.Lock()
        self._fd_lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._peers: tuple[str, ...] = ()
        self._listed_at = float("-inf")
        self._dirfd: int | None = None
        self._listener: socket.socket | None = None
        self._listener_name: str | None = None
        self._cannot_listen = False
        self._readers: dict[asyncio.AbstractEventLoop, int] = {}

    # ------------------------------------------------------------------ sending

    def ping(self) -> None:
        """Something changed: wake waiters in this process now, and in the others."""
        self.notifier.notify()
        for name in self._peer_names():
            self._send(name)

    def has_peers(self) -> bool:
        """Whether other processes listen on this file (as of the cached listing)."""
        return bool(self._peer_names())

    def _send(self, name: str) -> None:
        sender = self._sender
        if sender is None:
            return
        try:
            sender.sendto(_PING, self._address(name))
        except BlockingIOError:
            pass  # its buffer is full of pings: it will wake anyway
        except ConnectionRefusedError:
            self._forget(name, unlink=True)  # the file outlived its process
        except OSError:
            self._forget(name, unlink=False)

    def _peer_names(self) -> tuple[str, ...]:
        now = system_clock.monotonic()
        with self._lock:
            if now - self._listed_at >= LISTING_TTL_S:
                self._listed_at = now
                self._peers = self._list_peers()
            return self._peers

    def _list_peers(self) -> tuple[str, ...]:
        try:
            names = os.listdir(self.dir)
        except OSError:
            return ()
        own = f"{self.pid}-"
        peers = tuple(n for n in names if n.endswith(".sock") and not n.startswith(own))
        if peers and self._sender is None:
            try:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            except (OSError, AttributeError):
                return ()
        return peers

    def _forget(self, name: str, *, unlink: bool) -> None:
        with self._lock:
            self._peers = tuple(p for p in self._peers if p != name)
        if unlink:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, name))

    def _address(self, name: str) -> str:
        path = os.path.join(self.dir, name)
        if len(os.fsencode(path)) <= _MAX_SUN_PATH:
            return path
        # sun_path holds ~108 bytes; reach a deep directory through an open descriptor.
        with self._fd_lock:
            if self._dirfd is None:
                self._dirfd = os.open(self.dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            return f"/proc/self/fd/{self._dirfd}/{name}"

    # ------------------------------------------------------------------ listening

    @contextlib.contextmanager
    def listening(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """While inside, pings from other processes wake this process's waiters."""
        sock = self._bind()
        registered = sock is not None and self._add_reader(loop, sock)
        try:
            yield
        finally:
            if registered and sock is not None:
                self._remove_reader(loop, sock)

    def _add_reader(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
        with self._lock:
            count = self._readers.get(loop, 0)
            self._readers[loop] = count + 1
        if count == 0:
            self._drain_quietly(sock)  # pings that arrived while busy are stale
            try:
                loop.add_reader(sock.fileno(), self._on_ping)
            except (NotImplementedError, RuntimeError, ValueError):
                with self._lock:
                    self._readers.pop(loop, None)
                return False
        return True

    def _remove_reader(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        with self._lock:
            count = self._readers.get(loop, 1) - 1
            if count > 0:
                self._readers[loop] = count
                return
            self._readers.pop(loop, None)
        if not loop.is_closed():
            loop.remove_reader(sock.fileno())

    def _bind(self) -> socket.socket | None:
        with self._lock:
            if self._listener is not None or self._cannot_listen:
                return self._listener
            name = f"{self.pid}-{next(_serial)}.sock"
            try:
                os.makedirs(self.dir, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, name))  # left by a dead process
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.bind(self._address(name))
            except (OSError, AttributeError) as exc:
                self._cannot_listen = True
                log.debug("no cross-process wake-ups for %s (%s); polling only", self.db_path, exc)
                return None
            self._listener, self._listener_name = sock, name
            return sock

    def _on_ping(self) -> None:
        if self._listener is not None:
            self._drain_quietly(self._listener)
        self.notifier.notify()

    @staticmethod
    def _drain_quietly(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(64):
                pass

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the sockets and remove this process's socket file."""
        listener, name = self._listener, self._listener_name
        self._listener = self._listener_name = None
        if listener is not None:
            for loop in list(self._readers):
                if not loop.is_closed():
                    with contextlib.suppress(Exception):
                        loop.remove_reader(listener.fileno())
            self._readers.clear()
            listener.close()
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, name))
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None
