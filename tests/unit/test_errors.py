"""Error messages say what happened and what to do next."""

from __future__ import annotations

import pytest

from offload import App, ConfigurationError, QueueFull, UnknownTask
from offload.brokers import open_broker


def test_wrong_broker_url_is_refused_at_once_with_examples() -> None:
    with pytest.raises(ConfigurationError, match=r"mysql://.*scheme must be one of.*sqlite:///"):
        App("mysql://localhost/db")
    with pytest.raises(ConfigurationError, match="Unknown broker URL"):
        open_broker("localhost:6379")


def test_queue_full_carries_what_a_caller_needs() -> None:
    exc = QueueFull("emails", depth=100, max_depth=100, retry_after_s=2.5)
    assert (exc.depth, exc.max_depth, exc.retry_after_s) == (100, 100, 2.5)
    assert "try again in about 2.5s" in str(exc)


def test_unknown_task_lists_what_is_registered() -> None:
    msg = str(UnknownTask("emails.sendd", ["emails.send", "reports.render"]))
    assert "emails.sendd" in msg and "emails.send, reports.render" in msg
    assert "offload worker module:app" in msg


def test_invalid_names_are_refused() -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError, match="Invalid queue name"):
        app.queue("has spaces")
    with pytest.raises(ConfigurationError, match="Invalid task name"):

        @app.task(name="bad name!")
        def f() -> None: ...


def test_duplicate_task_names_are_refused() -> None:
    app = App("memory://")

    @app.task(name="same")
    def f() -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):

        @app.task(name="same")
        def g() -> None: ...


async def test_routing_values_no_backend_can_store_are_refused_at_enqueue() -> None:
    app = App("memory://")

    @app.task(name="t")
    async def t() -> None: ...

    with pytest.raises(ConfigurationError, match="Invalid priority 1180591620717411303424"):
        await t.options(priority=2**70).enqueue()
    with pytest.raises(ConfigurationError, match=r"Invalid key 'a.x00b'.*none of them NUL"):
        await t.options(key="a\x00b").enqueue()
    with pytest.raises(ConfigurationError, match="Invalid id"):
        await t.options(job_id="order\x00-1").enqueue()
    [stats] = await (await app.broker()).stats(["default"])
    assert stats.counters.enqueued == 0
    await app.close()
