"""Versioned schema of the PostgreSQL broker: check it, create it, migrate it.

The schema records its version (the number of the last migration applied) and the
checksum of the functions installed with it. ``open()`` installs a missing schema, and
refuses one that is behind this offload (run ``offload db migrate``) or ahead of it
(upgrade offload). Migrations run in one transaction under an advisory lock keyed by the
schema name, so concurrent migrators (two processes opening a fresh database at once)
take turns, and a failed migration changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.brokers._pg_sql import (
    FUNCTIONS_SHA,
    LATEST_VERSION,
    MIGRATIONS,
    functions_script,
    render,
)
from offload.errors import BrokerError, SchemaOutOfDate

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["check_schema", "migrate", "schema_state"]


async def schema_state(conn: AsyncConnection[object], schema: str) -> tuple[int, str | None] | None:
    """The installed (version, functions checksum), or ``None`` if there is no schema."""
    cur = await conn.execute("SELECT to_regclass(%s)", [f'"{schema}".schema_version'])
    row = await cur.fetchone()
    if row is None or row[0] is None:  # type: ignore[index]
        return None
    sql = render(
        "SELECT version, functions_sha FROM {schema}.schema_version ORDER BY version DESC LIMIT 1",
        schema,
    )
    cur = await conn.execute(sql.encode())
    row = await cur.fetchone()
    if row is None:
        return 0, None
    return row[0], row[1]  # type: ignore[index]


def check_schema(state: tuple[int, str | None], schema: str, where: str) -> None:
    """Raise unless the installed schema is the one this offload expects."""
    version, sha = state
    if version > LATEST_VERSION:
        raise BrokerError(
            f"The offload schema {schema!r} at {where} is at version {version}, newer than "
            f"this offload knows ({LATEST_VERSION}): upgrade offload."
        )
    if version < LATEST_VERSION:
        raise SchemaOutOfDate(
            f"The offload schema {schema!r} at {where} is at version {version}, and this "
            f"offload needs version {LATEST_VERSION}: run `offload db migrate`."
        )
    if sha != FUNCTIONS_SHA:
        raise SchemaOutOfDate(
            f"The functions of the offload schema {schema!r} at {where} differ from this "
            "offload's: run `offload db migrate`."
        )


async def migrate(conn: AsyncConnection[object], schema: str, now: float) -> list[int]:
    """Bring ``schema`` to the latest version; return the migrations applied.

    Creates the schema if it is missing. Idempotent: an up-to-date schema is left alone.
    ``conn`` must be in autocommit mode: the lock is taken before the transaction begins,
    so the transaction sees (its catalog caches included) what a previous holder did.
    """
    key = f"offload:{schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
    try:
        async with conn.transaction():
            return await _migrate_locked(conn, schema, now)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])


async def _migrate_locked(conn: AsyncConnection[object], schema: str, now: float) -> list[int]:
    state = await schema_state(conn, schema)
    current = 0 if state is None else state[0]
    if state is not None:
        if current > LATEST_VERSION:
            check_schema(state, schema, "this database")
        if current == LATEST_VERSION and state[1] == FUNCTIONS_SHA:
            return []
    await conn.execute(render("CREATE SCHEMA IF NOT EXISTS {schema}", schema).encode())
    applied = []
    for m in MIGRATIONS[current:]:
        await conn.execute(render(m.text, schema).encode())
        await conn.execute(
            render(
                "INSERT INTO {schema}.schema_version (version, name, applied_at) "
                "VALUES (%s, %s, %s)",
                schema,
            ).encode(),
            [m.version, m.name, now],
        )
        applied.append(m.version)
    await conn.execute(functions_script(schema).encode())
    await conn.execute(
        render(
            "UPDATE {schema}.schema_version SET functions_sha = %s WHERE version = %s", schema
        ).encode(),
        [FUNCTIONS_SHA, LATEST_VERSION],
    )
    return applied
