"""Every page and its JSON twin over every backend: what they show, what they change."""

from __future__ import annotations

import asyncio

from offload.dashboard import create_dashboard
from tests.dashboard.conftest import client, csrf


async def test_overview_lists_every_queue_with_counts(filled) -> None:
    app, _ = filled
    async with client(create_dashboard(app)) as c:
        first = (await c.get("/api/overview")).json()
        await asyncio.sleep(1.1)  # a second snapshot gives rates
        data = (await c.get("/api/overview")).json()
        page = await c.get("/")
    rows = {q["queue"]: q for q in data["queues"]}
    assert rows["mail"]["succeeded"] == 3 and rows["bounces"]["dead"] == 2
    assert rows["mail"]["pending"] == 0 and rows["mail"]["service_p95_s"] is not None
    assert first["queues"][0]["lam"] is None  # one snapshot: no rate yet
    assert rows["mail"]["lam"] == 0.0 and rows["mail"]["window_s"] >= 1.0
    assert rows["mail"]["drain_note"] == "empty"
    assert page.status_code == 200 and "bounces" in page.text and 'class="chart"' in page.text


async def test_series_feed_the_charts(filled) -> None:
    app, _ = filled
    async with client(create_dashboard(app)) as c:
        await c.get("/api/series")
        await asyncio.sleep(1.1)
        series = (await c.get("/api/series?window=60")).json()
    assert len(series["t"]) == 2
    assert {line["label"] for line in series["depth"]} == {"mail", "bounces"}
    assert all(len(line["values"]) == 2 for line in series["throughput"])


async def test_jobs_filter_by_queue_state_and_task(filled) -> None:
    app, ids = filled
    async with client(create_dashboard(app)) as c:
        by_queue = (await c.get("/api/jobs?queue=bounces")).json()["jobs"]
        by_state = (await c.get("/api/jobs?state=succeeded")).json()["jobs"]
        by_task = (await c.get("/api/jobs?task=mail.send&limit=2")).json()
        page = await c.get("/jobs?queue=mail&state=succeeded")
        found = await c.get(f"/jobs?id={ids['ok'][0]}")
    assert {j["id"] for j in by_queue} == set(ids["dead"])
    assert {j["id"] for j in by_state} == set(ids["ok"])
    assert len(by_task["jobs"]) == 2 and by_task["next_cursor"]
    assert page.status_code == 200 and ids["ok"][1] in page.text
    assert found.status_code == 303 and found.headers["location"].endswith(ids["ok"][0])


async def test_job_detail_has_arguments_errors_and_timeline(filled) -> None:
    app, ids = filled
    dead = ids["dead"][1]
    async with client(create_dashboard(app)) as c:
        d = (await c.get(f"/api/jobs/{dead}")).json()
        page = (await c.get(f"/jobs/{dead}")).text
        ok = (await c.get(f"/api/jobs/{ids['ok'][0]}")).json()
        missing = await c.get("/api/jobs/nope")
    assert d["args"] == '[\n  "x1"\n]'
    assert [e["attempt"] for e in d["errors"]] == [1, 2]
    assert all("Traceback" in e["traceback"] and e["type"] == "ValueError" for e in d["errors"])
    labels = [s["label"] for s in d["timeline"]]
    assert labels[0] == "enqueued" and labels[-2:] == ["started", "dead"]
    assert d["can_requeue"] and not d["can_cancel"]
    assert "Traceback" in page and "attempt 2" in page
    assert ok["result"] == '"sent to user0@example.com"'
    assert missing.status_code == 404


async def test_dead_letters_requeue_and_delete_many(filled) -> None:
    app, ids = filled
    async with client(create_dashboard(app)) as c:
        token = await csrf(c)
        listed = (await c.get("/api/dead")).json()["jobs"]
        assert {j["id"] for j in listed} == set(ids["dead"])
        requeued = await c.post(
            "/api/actions/requeue", json={"ids": ids["dead"]}, headers={"X-CSRF-Token": token}
        )
        assert requeued.json() == {"action": "requeue", "requested": 2, "changed": 2}
        assert (await c.get("/api/dead")).json()["jobs"] == []
        deleted = await c.post("/actions/delete", data={"ids": ids["ok"][:2], "csrf_token": token})
        assert deleted.status_code == 303 and "done=delete%3A2" in deleted.headers["location"]
        assert (await c.get(f"/api/jobs/{ids['ok'][0]}")).status_code == 404


async def test_workers_page_shows_live_workers(filled) -> None:
    app, _ = filled
    worker = await app.worker(queues=("mail",), concurrency=3, heartbeat_s=0.1, poll_s=0.05)
    running = asyncio.create_task(worker.run())
    try:
        async with client(create_dashboard(app)) as c:
            for _ in range(50):
                workers = (await c.get("/api/workers")).json()
                if workers:
                    break
                await asyncio.sleep(0.1)
            page = (await c.get("/workers")).text
    finally:
        worker.stop(grace_s=0)
        await running
    assert [w["id"] for w in workers] == [worker.id]
    assert workers[0]["concurrency"] == 3 and workers[0]["queues"] == ["mail"]
    assert worker.id in page


async def test_events_page_shows_topics_groups_and_lag(filled) -> None:
    app, _ = filled
    app.topic("order.placed")
    await (await app.broker()).ensure_topic(
        app.topics["order.placed"], [_group("order.placed", "mailer")]
    )
    await app.publish("order.placed", {"id": 1})
    await app.publish("order.placed", {"id": 2})
    async with client(create_dashboard(app)) as c:
        topics = (await c.get("/api/events")).json()
        page = (await c.get("/events")).text
    [topic] = [t for t in topics if t["name"] == "order.placed"]
    assert topic["groups"][0]["group"] == "mailer" and topic["groups"][0]["lag"] == 2
    assert "order.placed" in page and "mailer" in page


def _group(topic: str, group: str):
    from offload.brokers.base import GroupSpec

    return GroupSpec(topic=topic, group=group)


async def test_every_html_page_answers(filled) -> None:
    app, _ = filled
    async with client(create_dashboard(app)) as c:
        for path in ["/", "/jobs", "/dead", "/workers", "/events", "/schedules"]:
            r = await c.get(path)
            assert r.status_code == 200, path
        assert (await c.get("/fragments/queues")).text.startswith('<section id="queues"')


async def test_schedules_show_next_and_last_runs(filled) -> None:
    app, _ = filled

    @app.every(minutes=5, schedule_name="digest", name="mail.digest")
    async def digest() -> None: ...

    async with client(create_dashboard(app)) as c:
        listing = (await c.get("/api/schedules")).json()
        page = (await c.get("/schedules")).text
    [s] = listing["schedules"]
    assert listing["available"] and s["name"] == "digest" and s["last_run"] is None
    assert s["next_run"] > app.clock.now() and "5" in s["trigger"]
    assert "digest" in page
