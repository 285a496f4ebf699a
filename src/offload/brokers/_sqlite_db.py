"""The SQLite broker's connection: URL settings, pragmas, schema migrations, error mapping.

Everything here runs on the broker's own database thread (see ``sqlite.py``), never on the
event loop. A :class:`Database` owns one connection in autocommit mode and runs each
broker call as one ``BEGIN IMMEDIATE`` transaction (:meth:`Database.write`): the write lock
is taken up front, so two processes can never both read "queued" and both claim (the
duplicate claims of huey#123 came from relying on implicit transactions).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
from dataclasses import dataclass, fields
from importlib import resources
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

from offload.brokers.base import redact_url
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError, SchemaOutOfDate

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from offload.clock import Clock

__all__ = [
    "Database",
    "Migration",
    "Queries",
    "SqliteSettings",
    "packaged_migrations",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SQL_PACKAGE = "offload.brokers"
_SQL_DIR = "sqlite_sql"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """What a ``sqlite://`` URL asks for.

    ``sqlite:///relative/path.db`` (relative to the working directory at construction) or
    ``sqlite:////absolute/path.db``, with optional query parameters:

    - ``synchronous=FULL`` (default; an acknowledged write survives a power cut),
      ``EXTRA``, or ``NORMAL`` (faster; the last commits may be lost on power loss, never
      on a process crash).
    - ``busy_timeout_ms=5000``: how long a write waits for another process's lock before
      the call fails with :class:`BrokerUnavailable` (and is retried by the worker).
    - ``migrate=true``: bring an older schema up to date on open; ``false`` refuses with
      :class:`SchemaOutOfDate` instead.
    """

    path: str
    synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
    busy_timeout_ms: int = 5000
    migrate: bool = True

    @classmethod
    def from_url(cls, url: str) -> SqliteSettings:
        """Parse and validate a ``sqlite://`` URL.

        Raises:
            ConfigurationError: a host, an empty or in-memory path, or an unknown option.
        """
        parts = urlsplit(url)
        shown = redact_url(url)
        if parts.netloc:
            raise ConfigurationError(
                f"{shown!r}: a sqlite URL has no host. Use sqlite:///relative/path.db "
                "(three slashes) or sqlite:////absolute/path.db (four)."
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path or path == ":memory:" or path.endswith("/"):
            raise ConfigurationError(
                f"{shown!r} names no database file. Use sqlite:///offload.db, or memory:// "
                "for a store that lives only in this process."
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        known = {"synchronous", "busy_timeout_ms", "migrate"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(
                f"{shown!r}: unknown option(s) {', '.join(unknown)}; "
                f"the sqlite URL accepts {', '.join(sorted(known))}."
            )
        return cls(
            path=os.path.abspath(path),
            synchronous=_synchronous(options.get("synchronous", "FULL"), shown),
            busy_timeout_ms=_busy_timeout(options.get("busy_timeout_ms", "5000"), shown),
            migrate=_flag(options.get("migrate", "true"), shown),
        )


def _synchronous(raw: str, shown: str) -> Literal["FULL", "EXTRA", "NORMAL"]:
    sync = raw.upper()
    if sync == "FULL":
        return "FULL"
    if sync == "EXTRA":
        return "EXTRA"
    if sync == "NORMAL":
        return "NORMAL"
    raise ConfigurationError(
        f"{shown!r}: synchronous must be FULL (default, survives power loss), EXTRA "
        "or NORMAL (may lose the last commits on power loss); OFF is not offered."
    )


def _busy_timeout(raw: str, shown: str) -> int:
    if not raw.isdigit():
        raise ConfigurationError(f"{shown!r}: busy_timeout_ms must be milliseconds (>= 0).")
    return int(raw)


def _flag(raw: str, shown: str) -> bool:
    flag = raw.lower()
    if flag not in _TRUE | _FALSE:
        raise ConfigurationError(f"{shown!r}: migrate must be true or false.")
    return flag in _TRUE


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Queries:
    """The statements of ``sqlite_sql/queries.sql``, one attribute per ``-- name:``.

    Loading checks that the file and this class name the same statements, so a renamed
    or missing statement fails at import, not in the middle of a transaction.
    """

    existing_ids: str
    dedupe_holder: str
    queue_pending: str
    key_slots: str
    insert_job: str
    upsert_stats: str
    queue_has_work: str
    any_due: str
    next_due: str
    promote_scheduled: str
    promote_retrying: str
    claim: str
    extend: str
    set_progress: str
    ack: str
    ack_batch: str
    retry: str
    finish_running: str
    release: str
    key_active: str
    key_blocked_head: str
    set_state: str
    recover_expired: str
    prune_jobs: str
    prune_kv: str
    prune_workers: str
    job_brief: str
    finish_pending: str
    request_cancel: str
    delete_job: str
    max_seq: str
    requeue_job: str
    get_jobs: str
    list_jobs: str
    list_jobs_walk: str
    list_jobs_rare: str
    list_jobs_running: str
    queues: str
    stats_of_queue: str
    oldest_pending: str
    timings: str
    queue_ids_in_states: str
    topic_get: str
    topic_upsert: str
    topic_create: str
    topic_advance: str
    topic_replayed: str
    topics_all: str
    group_list: str
    group_get: str
    group_upsert: str
    event_insert: str
    events_from: str
    trim_events_by_count: str
    trim_events_by_age: str
    lease_acquire: str
    lease_release: str
    bucket_init: str
    bucket_take: str
    kv_get: str
    kv_set: str
    worker_upsert: str
    worker_delete: str
    workers_live: str

    @classmethod
    def load(cls) -> Queries:
        """Read and split ``queries.sql``."""
        text = resources.files(_SQL_PACKAGE).joinpath(_SQL_DIR, "queries.sql").read_text("utf-8")
        found = _split_named(text)
        wanted = {f.name for f in fields(cls)}
        if set(found) != wanted:
            raise RuntimeError(
                f"queries.sql and Queries disagree: missing {sorted(wanted - set(found))}, "
                f"unexpected {sorted(set(found) - wanted)}"
            )
        return cls(**found)


def _split_named(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = chunk.partition("\n")
        sql = "\n".join(ln for ln in body.splitlines() if not ln.lstrip().startswith("--"))
        out[name.strip()] = sql.strip()
    return out


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step of the schema: ``migrations/NNNN_name.sql`` sets user_version NNNN."""

    version: int
    name: str
    sql: str


def packaged_migrations() -> list[Migration]:
    """The migrations shipped with offload, in order."""
    folder = resources.files(_SQL_PACKAGE).joinpath(_SQL_DIR, "migrations")
    out = []
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            out.append(Migration(int(m[1]), m[2], entry.read_text("utf-8")))
    out.sort(key=lambda m: m.version)
    if [m.version for m in out] != list(range(1, len(out) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps: {out}")
    return out


def _statements(script: str) -> list[str]:
    """Split a script into whole statements (``sqlite3.complete_statement`` knows quoting)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") for ln in buf.splitlines() if ln):
        raise RuntimeError(f"incomplete SQL statement at the end of a migration: {buf!r}")
    return out


# --------------------------------------------------------------------------- database


class Database:
    """One connection to the store, used only from the broker's database thread."""

    def __init__(
        self, con: sqlite3.Connection, settings: SqliteSettings, url: str, clock: Clock
    ) -> None:
        self.con = con
        self.settings = settings
        self.url = url
        self.clock = clock
        self.cur = con.cursor()

    @classmethod
    def open(
        cls,
        settings: SqliteSettings,
        url: str,
        clock: Clock,
        migrations: Sequence[Migration] | None = None,
    ) -> Database:
        """Connect, apply the durability pragmas and bring the schema up to date.

        Raises:
            BrokerError: the path cannot be opened, is not a database, or has a schema
                from a newer offload; :class:`SchemaOutOfDate` if it is older and the URL
                says ``migrate=false``.
        """
        _check_directory(settings, url)
        try:
            con = sqlite3.connect(
                settings.path,
                timeout=settings.busy_timeout_ms / 1000,
                isolation_level=None,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise map_error(exc, settings, url) from exc
        db = cls(con, settings, url, clock)
        try:
            db._configure()
            db._migrate(packaged_migrations() if migrations is None else migrations)
        except BaseException:
            con.close()
            raise
        return db

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite when the last one closes)."""
        self.con.close()

    # ------------------------------------------------------------------ transactions

    def write(self, body: Callable[[float], T], *, durable: bool = True) -> T:
        """Run ``body(now)`` in one ``BEGIN IMMEDIATE`` transaction and commit it.

        ``now`` is read from the clock after the write lock is held, so a wait for the
        lock never makes a lease check use a stale instant.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL``
        for this transaction). Only for writes whose loss in a power cut at-least-once
        delivery absorbs (a claim or a lease extension: the job just runs again); the next
        durable commit's fsync makes them durable too, as the WAL only ever keeps a
        consistent prefix.
        """
        if durable:
            return self._transaction("BEGIN IMMEDIATE", body)
        self._set_synchronous("NORMAL")
        try:
            return self._transaction("BEGIN IMMEDIATE", body)
        finally:
            self._set_synchronous(self.settings.synchronous)

    def snapshot(self, body: Callable[[float], T]) -> T:
        """Run read-only ``body(now)`` in one read transaction: one consistent view, no
        write lock (WAL readers never wait for writers)."""
        return self._transaction("BEGIN", body)

    def _transaction(self, begin: str, body: Callable[[float], T]) -> T:
        con = self.con
        try:
            con.execute(begin)
            try:
                out = body(self.clock.now())
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise map_error(exc, self.settings, self.url) from exc
        return out

    def _set_synchronous(self, level: str) -> None:
        try:
            self.con.execute(f"PRAGMA synchronous={level}")
        except sqlite3.Error as exc:
            raise map_error(exc, self.settings, self.url) from exc

    def read(self, body: Callable[[], T]) -> T:
        """Run read-only statements (each its own snapshot), mapping driver errors."""
        try:
            return body()
        except sqlite3.Error as exc:
            raise map_error(exc, self.settings, self.url) from exc

    def data_version(self) -> int:
        """Changes when another connection commits: the cheap "anything new?" probe."""
        return int(self.read(lambda: self.cur.execute("PRAGMA data_version").fetchone()[0]))

    def pragmas(self) -> dict[str, object]:
        """The settings in force on this connection (for diagnostics and tests)."""
        names = ("journal_mode", "synchronous", "busy_timeout", "user_version", "fullfsync")
        try:
            return {n: self.con.execute(f"PRAGMA {n}").fetchone()[0] for n in names}
        except sqlite3.Error as exc:
            raise map_error(exc, self.settings, self.url) from exc

    # ------------------------------------------------------------------ set-up

    def _configure(self) -> None:
        con, s = self.con, self.settings
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            con.execute(f"PRAGMA synchronous={s.synchronous}")
            con.execute(f"PRAGMA busy_timeout={s.busy_timeout_ms}")
            if sys.platform == "darwin":  # fsync alone does not reach the platter on macOS
                con.execute("PRAGMA fullfsync=ON")
                con.execute("PRAGMA checkpoint_fullfsync=ON")
            con.execute("PRAGMA journal_size_limit=67108864")  # WAL back to 64 MiB after a burst
            con.execute("PRAGMA temp_store=MEMORY")
            con.execute("PRAGMA cache_size=-16000")
            # No mmap: mapping the file saved ~13% of a claim's CPU with 200k jobs stored,
            # but every mapped page counts in the worker's RSS (85 MB instead of 52 while
            # draining 100k ready beside 100k delayed jobs; benchmarks/memory.py).
            con.execute("PRAGMA mmap_size=0")
        except sqlite3.Error as exc:
            raise map_error(exc, s, self.url) from exc
        if str(mode).lower() != "wal":
            raise BrokerError(
                f"{redact_url(self.url)}: SQLite could not switch {s.path} to WAL mode (it "
                f"stayed {mode!r}). WAL needs a local file system with shared memory; put the "
                "database on a local disk, not a network share."
            )

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        target = migrations[-1].version if migrations else 0
        current = self._user_version()
        if current == target:
            return
        self._check_not_newer(current, target)
        if not self.settings.migrate:
            raise SchemaOutOfDate(
                f"{redact_url(self.url)}: the database schema is version {current}, this "
                f"offload needs {target}. Open it once without migrate=false (offload "
                "migrates it on open), or run the older offload that wrote it."
            )

        def apply(_now: float) -> None:
            start = self._user_version()  # another process may have migrated meanwhile
            self._check_not_newer(start, target)
            for m in migrations:
                if m.version > start:
                    for stmt in _statements(m.sql):
                        self.con.execute(stmt)
                    self.con.execute(f"PRAGMA user_version={m.version}")
                    log.info("migrated %s to schema %d (%s)", m.name, m.version, self.settings.path)

        self.write(apply)

    def _user_version(self) -> int:
        return int(self.read(lambda: self.con.execute("PRAGMA user_version").fetchone()[0]))

    def _check_not_newer(self, current: int, target: int) -> None:
        if current > target:
            raise BrokerError(
                f"{redact_url(self.url)}: the database schema is version {current}, newer "
                f"than this offload understands ({target}). Upgrade offload on this machine."
            )


def _check_directory(settings: SqliteSettings, url: str) -> None:
    folder = os.path.dirname(settings.path)
    if not os.path.isdir(folder):
        what = "is not a directory" if os.path.exists(folder) else "does not exist"
        raise BrokerError(
            f"{redact_url(url)}: cannot create the database, its directory {folder} {what}. "
            "Create the directory, or point the URL at another path."
        )
    if os.path.isdir(settings.path):
        raise BrokerError(
            f"{redact_url(url)}: {settings.path} is a directory. Point the URL at a file, "
            "for example sqlite:///offload.db."
        )


# --------------------------------------------------------------------------- errors

_ADVICE = {
    sqlite3.SQLITE_NOTADB: "is not an SQLite database (or is encrypted). Point the URL at "
    "another file, or move this one away and offload creates a fresh store.",
    sqlite3.SQLITE_CORRUPT: "is corrupt. Restore it from a backup, or salvage it with "
    "`sqlite3 FILE .recover` and point the URL at the result.",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened. Check that its directory exists and that "
    "this user may create files there (WAL keeps -wal and -shm files beside it).",
    sqlite3.SQLITE_READONLY: "is read-only for this process. Give this user write access "
    "to the file, its -wal and -shm files and their directory.",
    sqlite3.SQLITE_PERM: "is not accessible: check its permissions.",
    sqlite3.SQLITE_FULL: "cannot grow: the disk is full. Free space, then retry.",
    sqlite3.SQLITE_IOERR: "hit an I/O error. Check the disk and the system log.",
}


def map_error(exc: sqlite3.Error, settings: SqliteSettings, url: str) -> BrokerError:
    """The offload error for a driver error: transient lock waits become BrokerUnavailable."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    where = f"{redact_url(url)} ({settings.path})"
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BrokerUnavailable(
            f"{where} stayed locked by another connection for {settings.busy_timeout_ms} ms "
            f"({exc}). Something holds a long write transaction; the call can be retried, "
            "or raise busy_timeout_ms in the URL."
        )
    if primary in _ADVICE:
        return BrokerError(f"{where} {_ADVICE[primary]} (SQLite: {exc})")
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
        return BrokerError(
            f"{where}: the schema is missing a table ({exc}). Another program may have "
            "changed the database; point the URL at a file that only offload uses."
        )
    return BrokerError(f"{where}: SQLite failed: {exc}")
