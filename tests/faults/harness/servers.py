"""Private backend servers for fault tests, on free loopback ports in temp dirs.

* :class:`PrivateRedis`: ``redis-server`` with a generated config: ``appendonly yes``,
  ``appendfsync always``, ``maxmemory-policy noeviction``, no RDB snapshots (each
  overridable). :meth:`PrivateRedis.crash` is ``kill -9``; :meth:`PrivateRedis.start`
  again reloads the append-only file on the same port.
* :class:`PrivatePostgres`: a cluster made by ``initdb`` as the ``postgres`` user (initdb
  refuses root) in a dir owned by it, its unix socket in the same dir, ``fsync=on`` and
  ``synchronous_commit=on`` (the defaults, stated). Cheap enough (about a second) to
  share per test module; :meth:`PrivatePostgres.url` gives each test its own schema.
  :meth:`PrivatePostgres.crash` is ``pg_ctl stop -m immediate`` (no checkpoint: the
  restart replays the WAL).

Both raise :class:`ServerMissing` when the binaries or the ``postgres`` user are absent,
so fixtures can skip (or fail under ``OFFLOAD_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PG_BIN", "PrivatePostgres", "PrivateRedis", "ServerMissing", "free_port"]

PG_BIN = Path(os.environ.get("OFFLOAD_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ServerMissing(RuntimeError):
    """The server cannot be started here (binary or user missing)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of one test (see the module docs)."""

    def __init__(
        self,
        root: Path,
        *,
        appendonly: bool = True,
        appendfsync: str = "always",
        policy: str = "noeviction",
        maxmemory: str | None = None,
    ) -> None:
        if shutil.which("redis-server") is None:
            raise ServerMissing("redis-server is not installed (apt-get install redis-server)")
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"appendonly {'yes' if appendonly else 'no'}",
            f"appendfsync {appendfsync}",
            f"maxmemory-policy {policy}",
            'save ""',
            f"logfile {self.dir / 'redis.log'}",
        ]
        if maxmemory:
            lines.append(f"maxmemory {maxmemory}")
        self.config = self.dir / "redis.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def url(self, prefix: str | None = None, **params: str) -> str:
        query = {"prefix": prefix or f"f{uuid.uuid4().hex[:8]}", **params}
        return f"redis://127.0.0.1:{self.port}/0?" + "&".join(f"{k}={v}" for k, v in query.items())

    def start(self, timeout: float = 20) -> None:
        """Start (or restart after :meth:`crash`) and wait until it answers PING."""
        self.proc = subprocess.Popen(
            ["redis-server", str(self.config)], stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer in {timeout}s: {self.log_tail()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def crash(self) -> None:
        """``kill -9`` the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.crash()

    def log_tail(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text()[-800:] if path.exists() else "(no log)"


class PrivatePostgres:
    """A PostgreSQL cluster of one test module (see the module docs)."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise ServerMissing(f"PostgreSQL binaries not found in {PG_BIN} (set OFFLOAD_PG_BIN)")
        try:
            self._user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerMissing("no 'postgres' user to run initdb as") from None
        # Not under pytest's tmp dir: its parents are 0700 root, closed to postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="offload-faults-pg-"))
        os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False

    def url(self, schema: str | None = None) -> str:
        schema = schema or f"f_{uuid.uuid4().hex[:10]}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema={schema}"

    def _pg(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-800:]} {self.log_tail()}"
            )

    def init(self) -> None:
        self._pg(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"
        )

    def start(self) -> None:
        """Start (or restart after :meth:`crash`; recovery replays the WAL) and wait."""
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c synchronous_commit=on -c max_connections=100"
        )
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._pg(
            pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )
        self.running = True

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every backend quits at once, no checkpoint."""
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False

    def stop(self) -> None:
        if self.running:
            try:
                self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            except (RuntimeError, subprocess.SubprocessError):
                self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace")[-800:] if path.exists() else ""
