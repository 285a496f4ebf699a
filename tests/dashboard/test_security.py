"""The dashboard's security promises (RELIABILITY.md §4.3): each as a test."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import pytest

from offload.dashboard import DashboardConfig, check_bind, create_dashboard
from offload.errors import ConfigurationError
from tests.dashboard.conftest import TOKEN, XSS, client, csrf

# ------------------------------------------------------------------ binding


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com"])
def test_non_loopback_bind_without_auth_refuses(host: str) -> None:
    with pytest.raises(ConfigurationError, match="without authentication"):
        check_bind(host, DashboardConfig())


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_bind_needs_no_auth(host: str) -> None:
    check_bind(host, DashboardConfig())


def test_non_loopback_bind_with_token_or_basic_auth_is_allowed() -> None:
    check_bind("0.0.0.0", DashboardConfig(token=TOKEN))
    check_bind("0.0.0.0", DashboardConfig(basic_auth=("ops", "a-long-password-123")))


def test_cli_refuses_to_start_on_a_public_address_without_a_token(tmp_path) -> None:
    (tmp_path / "dashapp.py").write_text("from offload import App\napp = App('memory://')\n")
    done = subprocess.run(
        [sys.executable, "-m", "offload", "dashboard", "dashapp:app", "--host", "0.0.0.0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "without authentication" in done.stderr
    assert "dashboard on http" not in done.stderr  # it never listened


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 16"):
        DashboardConfig(token="secret")


# ------------------------------------------------------------------ authentication


async def test_requests_without_the_token_get_401(memory_app) -> None:
    web = create_dashboard(memory_app[0], token=TOKEN)
    async with client(web) as c:
        for path in ["/", "/jobs", "/dead", "/api/overview", "/api/jobs", "/fragments/queues"]:
            r = await c.get(path)
            assert r.status_code == 401, path
        wrong = await c.get("/api/overview", headers={"Authorization": "Bearer " + "x" * 30})
        assert wrong.status_code == 401
        ok = await c.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert (await c.get("/login")).status_code == 200  # the login page is public


async def test_token_login_sets_a_session_cookie_not_the_token(memory_app) -> None:
    web = create_dashboard(memory_app[0], token=TOKEN)
    async with client(web) as c:
        token = await _csrf_from_login(c)
        bad = await c.post("/login", data={"token": "x" * 30, "csrf_token": token})
        assert bad.status_code == 401
        r = await c.post("/login", data={"token": TOKEN, "csrf_token": token})
        assert r.status_code == 303
        assert TOKEN not in r.headers["set-cookie"]
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert (await c.get("/")).status_code == 200


async def _csrf_from_login(c) -> str:
    page = (await c.get("/login")).text
    return re.search(r'name="csrf_token" value="([^"]+)"', page)[1]


async def test_basic_auth(memory_app) -> None:
    web = create_dashboard(memory_app[0], basic_auth=("ops", "a-long-password-123"))
    async with client(web) as c:
        r = await c.get("/")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic")
        good = base64.b64encode(b"ops:a-long-password-123").decode()
        assert (await c.get("/", headers={"Authorization": f"Basic {good}"})).status_code == 200
        bad = base64.b64encode(b"ops:wrong-password-12345").decode()
        assert (await c.get("/", headers={"Authorization": f"Basic {bad}"})).status_code == 401


async def test_unauthenticated_dashboard_answers_only_to_loopback_hosts(open_web) -> None:
    async with client(open_web) as c:
        assert (await c.get("/")).status_code == 200
        rebound = await c.get("/", headers={"Host": "attacker.example:8700"})
        assert rebound.status_code == 400


# ------------------------------------------------------------------ CSRF


async def test_post_without_csrf_token_is_refused(memory_app, open_web) -> None:
    dead = memory_app[1]["dead"][0]
    async with client(open_web) as c:
        r = await c.post("/actions/requeue", data={"ids": dead})
        assert r.status_code == 403
        token = await csrf(c)
        r = await c.post("/actions/requeue", data={"ids": dead, "csrf_token": "0" * 64})
        assert r.status_code == 403
        r = await c.post("/api/actions/requeue", json={"ids": [dead]})
        assert r.status_code == 403
        cross = await c.post(
            "/actions/requeue",
            data={"ids": dead, "csrf_token": token},
            headers={"Origin": "https://attacker.example"},
        )
        assert cross.status_code == 403
        assert (await c.get(f"/api/jobs/{dead}")).json()["job"]["state"] == "dead"
        ok = await c.post(
            "/actions/requeue",
            data={"ids": dead, "csrf_token": token},
            headers={"Origin": "http://127.0.0.1:8700"},
        )
        assert ok.status_code == 303
        assert (await c.get(f"/api/jobs/{dead}")).json()["job"]["state"] == "queued"


async def test_csrf_token_is_bound_to_its_cookie(memory_app, open_web) -> None:
    dead = memory_app[1]["dead"][0]
    async with client(open_web) as a, client(open_web) as b:
        stolen = await csrf(a)
        await csrf(b)  # b has its own cookie
        r = await b.post("/actions/delete", data={"ids": dead, "csrf_token": stolen})
        assert r.status_code == 403


async def test_bearer_requests_need_no_csrf_token(memory_app) -> None:
    dead = memory_app[1]["dead"][0]
    web = create_dashboard(memory_app[0], token=TOKEN)
    async with client(web, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        r = await c.post("/api/actions/requeue", json={"ids": [dead]})
        assert r.status_code == 200
        assert r.json() == {"action": "requeue", "requested": 1, "changed": 1}


async def test_state_changes_need_post(memory_app, open_web) -> None:
    async with client(open_web) as c:
        assert (await c.get("/actions/requeue")).status_code == 405
        assert (await c.put("/api/actions/requeue")).status_code == 405


async def test_read_only_mode_refuses_changes_and_hides_buttons(memory_app) -> None:
    web = create_dashboard(memory_app[0], read_only=True)
    dead = memory_app[1]["dead"][0]
    async with client(web) as c:
        page = (await c.get("/dead")).text
        assert "Requeue" not in page and "Delete" not in page and "read-only" in page
        token = await csrf(c)
        r = await c.post("/actions/requeue", data={"ids": dead, "csrf_token": token})
        assert r.status_code == 403


# ------------------------------------------------------------------ escaping and CSP


async def test_script_arguments_and_messages_render_as_text(memory_app, open_web) -> None:
    hostile = memory_app[1]["dead"][0]
    async with client(open_web) as c:
        for path in ["/jobs", "/dead", f"/jobs/{hostile}", "/jobs?queue=bounces"]:
            page = (await c.get(path)).text
            assert "<script>alert" not in page, path
            assert "<img src=x" not in page, path
        detail = (await c.get(f"/jobs/{hostile}")).text
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in detail
        assert "&lt;img src=x onerror=alert(1)&gt;" in detail
        api = await c.get(f"/api/jobs/{hostile}")
        assert api.headers["content-type"] == "application/json"
        assert api.headers["x-content-type-options"] == "nosniff"
        assert XSS in api.json()["args"]  # data is data in JSON


async def test_every_page_has_a_nonce_csp_and_no_inline_code(memory_app, open_web) -> None:
    job = memory_app[1]["ok"][0]
    async with client(open_web) as c:
        nonces = set()
        for path in ["/", "/jobs", "/dead", "/workers", "/events", "/schedules", f"/jobs/{job}"]:
            r = await c.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            nonce = re.search(r"'nonce-([^']+)'", csp)[1]
            nonces.add(nonce)
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            scripts = re.findall(r"<script([^>]*)>", r.text)
            assert scripts and all(f'nonce="{nonce}"' in s for s in scripts), path
            assert not re.search(r"<[a-z][^>]*\s(style|on[a-z]+)=", r.text), path
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-store"
        assert len(nonces) == 7  # fresh per request


# ------------------------------------------------------------------ bounded input


@pytest.mark.parametrize(
    "path",
    [
        "/jobs?limit=0",
        "/jobs?limit=100000",
        "/jobs?limit=1e3",
        "/jobs?limit=5&limit=6",
        "/api/jobs?state=zombie",
        "/api/jobs?queue=no-such-queue",
        "/api/jobs?queue=%3Cscript%3E",
        "/api/jobs?task=a*b",
        "/api/jobs?cursor=%27%3B%20drop",
        "/api/series?window=99999999",
        "/api/series?window=-1",
    ],
)
async def test_parameters_are_range_checked(open_web, path: str) -> None:
    async with client(open_web) as c:
        r = await c.get(path)
        assert r.status_code == 400, r.text
        assert "<script>" not in r.text


async def test_oversized_requests_are_refused(memory_app, open_web) -> None:
    async with client(open_web) as c:
        assert (await c.get("/jobs?task=" + "a" * 3000)).status_code == 414
        token = await csrf(c)
        big = {"ids": ["x"] * 501}
        r = await c.post("/api/actions/delete", json=big, headers={"X-CSRF-Token": token})
        assert r.status_code == 400
        huge = {"ids": ["y" * 200] * 400}
        r = await c.post("/api/actions/delete", json=huge, headers={"X-CSRF-Token": token})
        assert r.status_code == 413


async def test_actions_never_redirect_off_site(memory_app, open_web) -> None:
    dead = memory_app[1]["dead"][1]
    async with client(open_web) as c:
        token = await csrf(c)
        r = await c.post(
            "/actions/requeue",
            data={"ids": dead, "csrf_token": token, "back": "https://evil.example", "queue": "//x"},
        )
        assert r.status_code == 303
        assert r.headers["location"].startswith("/dead?")
        assert "evil" not in r.headers["location"] and "//x" not in r.headers["location"]
