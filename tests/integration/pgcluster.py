"""A PostgreSQL cluster of a test's own, on a free port: initialised, started, killed.

initdb refuses to run as root, so every command runs as the ``postgres`` user, in a
temporary directory owned by it (also the socket directory). Nothing of the shared
server is touched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """``init()``, ``start()``, ``kill()`` (``pg_ctl stop -m immediate``), ``remove()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="offload-pg-"))
        self.data = self.dir / "data"
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)

    @staticmethod
    def possible() -> bool:
        """Root, runuser, the postgres user and the PostgreSQL 15 binaries are all here."""
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return os.geteuid() == 0 and (PG_BIN / "initdb").exists() and bool(shutil.which("runuser"))

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def init(self) -> None:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
            "-l", str(self.dir / "log"), "-w", "start",
        )  # fmt: skip

    def kill(self) -> None:
        """Stop at once, like a crash: no shutdown checkpoint, recovery on the next start."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def remove(self) -> None:
        try:
            self.kill()
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)
