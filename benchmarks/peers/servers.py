"""The benchmark's own servers, on free loopback ports: Redis and a PostgreSQL cluster.

Redis runs with ``--save '' --appendonly no`` (no persistence: what peers are usually
benchmarked with; every Redis row of the table shares that server). PostgreSQL is a
private cluster made with ``initdb`` as the ``postgres`` user (initdb refuses root) in a
temp dir owned by it, started with ``fsync=on`` (the default, stated so it is explicit);
when that is impossible the shared server at 127.0.0.1:5432 is used instead, with a
database of the benchmark's own, and the table says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class PrivateRedis:
    """``redis-server`` on a free port, no persistence, in a temp dir."""

    description = "private redis-server, --save '' --appendonly no"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="peers-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.dir,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
        if not _ready(self.port, 10):
            raise RuntimeError("redis-server did not start (is redis-server installed?)")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A cluster of its own: ``initdb`` and ``pg_ctl`` as the ``postgres`` user."""

    description = "private PostgreSQL 15 cluster (initdb), fsync=on"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="peers-pg-"))
        self.data = self.dir / "data"
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        user = pwd.getpwnam("postgres")  # KeyError: no postgres user
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
            " -c max_connections=200"
        )
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._run(
            pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )
        self.started = True

    def stop(self) -> None:
        if self.started:
            try:
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            except (subprocess.SubprocessError, OSError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class SharedPostgres:
    """The fallback: the machine's shared server (each run makes and drops its database)."""

    description = "SHARED PostgreSQL at 127.0.0.1:5432 (private cluster impossible)"
    url = SHARED_PG

    def start(self) -> None:
        if not _ready(5432, 2):
            raise RuntimeError("no PostgreSQL at 127.0.0.1:5432 either")

    def stop(self) -> None:
        pass

    def drop(self, database: str) -> None:
        """Drop the benchmark's database if a killed driver left it behind."""
        subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
             "-c", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip


def start_postgres(force_shared: bool) -> tuple[PrivatePostgres | SharedPostgres, str]:
    """The private cluster, or the shared server with the reason the private one failed."""
    reason = "--shared-pg given"
    if not force_shared:
        private = PrivatePostgres()
        try:
            private.start()
            return private, ""
        except (KeyError, OSError, subprocess.SubprocessError) as exc:
            private.stop()
            err = getattr(exc, "stderr", b"") or b""
            reason = f"{type(exc).__name__}: {exc} {err.decode(errors='replace')[-300:]}".strip()
    shared = SharedPostgres()
    shared.start()
    return shared, reason
