"""``offload events``: topics, subscriber group lag, and replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from offload.cli._base import app_option, broker_option, connect, console, main, run
from offload.clock import system_clock
from offload.errors import ConfigurationError
from offload.subscribers import group_lag, parse_from

if TYPE_CHECKING:
    from offload.brokers.base import TopicInfo
    from offload.subscribers import GroupLag


@main.group()
def events() -> None:
    """Topics, subscriber groups and replay."""


@events.command()
@app_option
@broker_option
def topics(app_path: str | None, broker: str | None) -> None:
    """Topics with their retained events and groups."""

    async def go() -> list[TopicInfo]:
        async with connect(app_path, broker) as b:
            return await b.topics()

    table = Table()
    for col in ("topic", "retained", "offsets", "retention", "groups"):
        table.add_column(col)
    for t in run(go()):
        span = "-" if t.first_offset is None else f"{t.first_offset}..{t.last_offset}"
        keep = "forever" if t.retention_s is None else f"{t.retention_s / 3600:g}h"
        if t.max_events is not None:
            keep += f", last {t.max_events:,}"
        table.add_row(t.name, f"{t.retained:,}", span, keep, ", ".join(g.group for g in t.groups))
    console.print(table)


@events.command()
@click.option("--topic", "-t", "topic_names", multiple=True, help="Only these topics.")
@app_option
@broker_option
def lag(topic_names: tuple[str, ...], app_path: str | None, broker: str | None) -> None:
    """How far each subscriber group is behind: events waiting, oldest age, dead."""

    async def go() -> list[GroupLag]:
        async with connect(app_path, broker) as b:
            return await group_lag(b, list(topic_names) or None)

    table = Table()
    for col in ("topic", "group", "behind", "running", "oldest waiting", "dead", "handled"):
        table.add_column(col, justify="left" if col in ("topic", "group") else "right")
    for g in run(go()):
        age = "-" if g.oldest_age_s is None else f"{g.oldest_age_s:.1f}s"
        table.add_row(
            g.topic,
            g.group,
            f"{g.behind:,}",
            f"{g.running:,}",
            age,
            f"[red]{g.dead:,}[/]" if g.dead else "0",
            f"{g.handled:,}",
        )
    console.print(table)


@events.command()
@click.argument("group")
@click.option(
    "--from",
    "start",
    required=True,
    metavar="OFFSET|AGO|TIME",
    help="An offset (1200), a duration ago (90m, 2h) or an ISO time.",
)
@click.option("--topic", "-t", help="The topic (needed when the group reads several).")
@app_option
@broker_option
def replay(
    group: str, start: str, topic: str | None, app_path: str | None, broker: str | None
) -> None:
    """Deliver again to GROUP every retained event from a point in its topic."""

    async def go() -> tuple[str, int]:
        async with connect(app_path, broker) as b:
            infos = await b.topics()
            candidates = [t.name for t in infos if group in {g.group for g in t.groups}]
            chosen = topic or _only(candidates, group)
            offset, when = parse_from(start, system_clock.now())
            return chosen, await b.replay(chosen, group, from_offset=offset, from_time=when)

    chosen, n = run(go())
    console.print(f"re-delivered {n:,} event(s) of {chosen!r} to group {group!r}")


def _only(candidates: list[str], group: str) -> str:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigurationError(
            f"No topic has a group named {group!r} (see offload events topics)."
        )
    raise ConfigurationError(
        f"Group {group!r} reads several topics ({', '.join(candidates)}): pick one with --topic."
    )


__all__ = ["events"]
