"""The SQL in docs/wire-format.md enqueues a job that an offload worker runs.

This is how a producer in another language enqueues on PostgreSQL; the test runs the
documented statement as written (with the test's schema in place of ``offload``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from offload import App
from tests.backends import BACKENDS, unavailable

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def documented_sql() -> str:
    [sql] = re.findall(r"^```sql\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return sql


async def test_documented_sql_enqueue_runs_in_a_worker(tmp_path: Path) -> None:
    if "postgres" not in BACKENDS:
        unavailable("the PostgreSQL backend is not registered")
    backend = BACKENDS["postgres"]
    reason = await backend.check()
    if reason:
        unavailable(reason)
    url = backend.make_url(tmp_path, "foreign")
    schema = parse_qs(urlsplit(url).query)["schema"][0]
    app = App(url)
    sent: list[tuple[str, int]] = []

    @app.task(name="shop.send_receipt", queue="emails", retries=3)
    async def send_receipt(to: str, order_id: int) -> str:
        sent.append((to, order_id))
        return "sent"

    try:
        await app.open()  # creates the schema
        import psycopg

        dsn = url.split("?")[0]
        sql = documented_sql().replace("offload.enqueue_one", f"{schema}.enqueue_one")
        sql = re.sub(r"--[^\n]*", "", sql)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            rows = await (await conn.execute(sql)).fetchall()
            again = await (await conn.execute(sql)).fetchall()
        assert rows == [("queued", "order-1001-receipt")]
        assert again == [("duplicate", "order-1001-receipt")]
        async with app.background_worker(queues=("emails",), poll_s=0.1):
            assert await app.job("order-1001-receipt").result(timeout=20) == "sent"
        assert sent == [("ada@example.com", 1001)]
    finally:
        await app.close()
        await backend.cleanup(url)


def test_the_documented_sql_is_there() -> None:
    assert "enqueue_one" in documented_sql()
    assert pytest  # the module is collected on every backend run
