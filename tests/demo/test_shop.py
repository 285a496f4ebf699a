"""The demo shop end to end: 202 at once, then the charge, receipt, invoice, analytics."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import httpx
import pytest

from offload.demo.runner import DemoOptions, running
from offload.demo.tasks import app, nightly_report
from offload.errors import ConfigurationError
from tests.demo.conftest import options, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from offload.demo.runner import Demo

ORDERS = 50


async def _all_done(client: httpx.AsyncClient, n: int) -> bool:
    state = (await client.get("/queue")).json()
    return all(s["done"] >= n for s in state["subscribers"].values())


async def test_fifty_orders_make_fifty_receipts_invoices_and_the_analytics_total(
    app_url: str, tmp_path: Path
) -> None:
    async with (
        running(options(tmp_path, app_url)) as demo,
        httpx.AsyncClient(base_url=demo.shop_url, timeout=30) as client,
    ):
        bodies = [
            {"customer": f"c{i % 7}", "items": {"tea": 1 + i % 3, "mug": 1}} for i in range(ORDERS)
        ]
        answers = await asyncio.gather(*(client.post("/orders", json=b) for b in bodies))
        assert {a.status_code for a in answers} == {202}
        ids = [a.json()["order_id"] for a in answers]
        assert answers[0].headers["location"] == f"/orders/{ids[0]}"
        await wait_for(lambda: _all_done(client, ORDERS), what="50 orders to be worked")

        receipts = [m for m in demo.inbox.messages() if m.subject.startswith("Receipt")]
        assert sorted(m.message_id for m in receipts) == sorted(
            f"<receipt-{i}@shop.example.com>" for i in ids
        )
        inbox = (await client.get("/inbox/messages", params={"limit": 1000})).json()
        assert inbox["total"] >= ORDERS

        invoices = sorted(demo.settings.invoices.glob("invoice-*.pdf"))
        assert [p.name for p in invoices] == sorted(f"invoice-{i}.pdf" for i in ids)
        assert all(p.read_bytes().startswith(b"%PDF-1.4") for p in invoices)

        analytics = (await client.get("/analytics")).json()
        expected = sum(a.json()["total_cents"] for a in answers)
        assert analytics["summary"] == {
            "orders": ORDERS,
            "paid": ORDERS,
            "counted": ORDERS,
            "revenue_cents": expected,
        }
        assert sum(c["total_cents"] for c in analytics["customers"]) == expected
        assert sum(c["orders"] for c in analytics["customers"]) == ORDERS


async def test_the_status_page_follows_every_job_of_an_order(
    demo: Demo, shop: httpx.AsyncClient
) -> None:
    placed = await shop.post("/orders", json={"customer": "ada", "items": {"pot": 1}})
    assert placed.status_code == 202
    url = placed.json()["status_url"]

    async def complete() -> dict[str, object] | None:
        body: dict[str, object] = (await shop.get(url)).json()
        return body if body["status"] == "complete" else None

    status = await wait_for(complete, what="the order to complete")
    jobs = status["jobs"]
    assert list(jobs) == ["charge", "receipt", "invoice", "analytics"]
    assert {j["state"] for j in jobs.values()} == {"succeeded"}
    assert jobs["invoice"]["progress"] == 1.0
    assert jobs["invoice"]["progress_message"] == "page 3/3"
    assert status["order"]["total_cents"] == 3400
    pdf = await shop.get(status["invoice_url"])
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


async def test_the_sync_path_has_done_everything_when_it_answers(
    demo: Demo, shop: httpx.AsyncClient
) -> None:
    answer = await shop.post("/orders/sync", json={"customer": "alan", "items": {"honey": 2}})
    assert answer.status_code == 200
    order_id = answer.json()["order_id"]
    assert demo.settings.invoice_path(order_id).exists()
    assert [m.subject for m in demo.inbox.messages(to="alan@example.com")] == [
        f"Receipt for order {order_id}"
    ]
    customers = (await shop.get("/analytics")).json()["customers"]
    assert customers == [
        {
            "customer": "alan",
            "orders": 1,
            "total_cents": 1800,
            "last_order": order_id,
            "last_placed": pytest.approx(customers[0]["last_placed"]),
        }
    ]
    assert (await shop.get(f"/orders/{order_id}")).json()["status"] == "complete"


async def test_a_full_orders_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    async with (
        running(options(tmp_path, max_depth=1)) as demo,
        httpx.AsyncClient(base_url=demo.shop_url, timeout=30) as client,
    ):
        answers = await asyncio.gather(
            *(
                client.post("/orders", json={"customer": "ada", "items": {"tea": 1}})
                for _ in range(40)
            )
        )
        busy = [a for a in answers if a.status_code == 429]
        assert busy, [a.status_code for a in answers]
        assert {a.status_code for a in answers} == {202, 429}
        for a in busy:
            body = a.json()
            assert body["max_depth"] == 1
            assert body["retry_after_s"] > 0
            assert int(a.headers["retry-after"]) == max(1, math.ceil(body["retry_after_s"]))


async def test_bad_orders_are_refused_with_the_reason(shop: httpx.AsyncClient) -> None:
    cases = {
        b'{"customer": "ada", "items": {"caviar": 1}}': "unknown product 'caviar'",
        b'{"customer": "ada", "items": {"tea": 0}}': "quantity of 'tea'",
        b'{"customer": "Ada Lovelace!", "items": {"tea": 1}}': "customer:",
        b"[1, 2]": "send a JSON object",
        b"{not json": "send JSON",
    }
    for body, reason in cases.items():
        for path in ("/orders", "/orders/sync"):
            answer = await shop.post(path, content=body)
            assert answer.status_code == 400, (path, body)
            assert reason in answer.json()["error"]
    assert (await shop.get("/orders/nope")).status_code == 404
    assert (await shop.get("/orders/nope/invoice.pdf")).status_code == 404


async def test_an_empty_post_buys_a_random_basket_and_a_key_makes_it_idempotent(
    shop: httpx.AsyncClient,
) -> None:
    assert (await shop.post("/orders")).status_code == 202
    first = await shop.post(
        "/orders", headers={"Idempotency-Key": "k-1"}, json={"customer": "ada", "items": {"tea": 1}}
    )
    again = await shop.post(
        "/orders", headers={"Idempotency-Key": "k-1"}, json={"customer": "ada", "items": {"tea": 1}}
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["order_id"] == again.json()["order_id"]


async def test_the_sales_report_is_scheduled_every_minute_and_mailed(
    demo: Demo, shop: httpx.AsyncClient
) -> None:
    [schedule] = [s for s in await app.schedule_infos() if s.name == "shop.nightly_report"]
    assert schedule.trigger == "every 0:01:00"
    await shop.post("/orders/sync", json={"customer": "grace", "items": {"tea": 1}})
    subject = await nightly_report()
    assert subject.endswith("1 orders, EUR 6.50")
    assert [m.subject for m in demo.inbox.messages(to="ops@example.com")] == [subject]


async def test_the_inbox_page_lists_what_arrived(demo: Demo, shop: httpx.AsyncClient) -> None:
    await shop.post("/orders/sync", json={"customer": "ken", "items": {"tea": 1}})
    page = await shop.get("/inbox/")
    assert page.status_code == 200
    assert "Receipt for order" in page.text
    one = await shop.get("/inbox/messages/1")
    assert "Hello ken" in one.text
    assert (await shop.get("/inbox/messages/999")).status_code == 404


async def test_a_port_in_use_is_refused_with_what_to_do(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=rf"127.0.0.1:{port}.*0 picks a free one"):
            async with running(DemoOptions(dir=tmp_path, port=port)):
                pass


async def test_the_dashboard_is_served_beside_the_shop_and_linked_from_each_job(
    tmp_path: Path,
) -> None:
    from offload.dashboard import create_dashboard

    async with (
        running(options(tmp_path, dashboard=create_dashboard(app))) as demo,
        httpx.AsyncClient(base_url=demo.shop_url, timeout=30) as client,
    ):
        assert demo.dashboard_url == f"{demo.shop_url}/dashboard/"
        assert (await client.get("/dashboard/")).status_code == 200
        answer = await client.post("/orders/sync", json={"customer": "ada", "items": {"tea": 1}})
        placed = await client.post("/orders", json={"customer": "ada", "items": {"tea": 1}})
        url = placed.json()["status_url"]

        async def charged() -> dict[str, object] | None:
            jobs: dict[str, object] = (await client.get(url)).json()["jobs"]
            return jobs.get("charge")  # type: ignore[return-value]

        charge = await wait_for(charged, what="the charge job")
        page = await client.get(charge["dashboard_url"])
        assert page.status_code == 200
        assert "shop.charge_order" in page.text

        async def listed() -> bool:  # the dashboard reads queue stats at most once a second
            queues = (await client.get("/dashboard/api/overview")).json()["queues"]
            return "orders" in {q["queue"] for q in queues}

        await wait_for(listed, what="the orders queue on the dashboard")
        assert answer.status_code == 200


async def test_curl_style_bodies_are_understood(shop: httpx.AsyncClient) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    # curl -d '{...}' labels JSON as a form; the index page's form sends real form fields.
    as_curl = await shop.post(
        "/orders", content=b'{"customer":"ada","items":{"tea":1}}', headers=form
    )
    assert as_curl.status_code == 202, as_curl.text
    as_form = await shop.post("/orders", content=b"customer=ada&sku=mug&qty=2", headers=form)
    assert as_form.status_code == 202, as_form.text
    assert as_form.json()["total_cents"] == 2400
    bad = await shop.post("/orders", content=b"customer=ada&sku=mug&qty=two", headers=form)
    assert bad.status_code == 400
    assert "whole-number qty" in bad.json()["error"]
    assert (await shop.get("/")).status_code == 200
