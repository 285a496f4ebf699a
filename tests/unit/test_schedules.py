"""Pure schedule arithmetic: cron in time zones across DST, intervals, tick ids, misfires."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import App, ConfigurationError
from offload.schedules import Cron, Every, Schedule, jitter_for, tick_id

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def walk(trigger: Cron | Every, start: float, n: int, zone: ZoneInfo = BERLIN) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = trigger.next_after(t)
        out.append(datetime.fromtimestamp(t, zone).strftime("%m-%d %H:%M%z"))
    return out


# --------------------------------------------------------------------------- cron and zones


def test_cron_reads_wall_clock_time_of_its_zone() -> None:
    utc = Cron("0 9 * * *")
    berlin = Cron("0 9 * * *", tz="Europe/Berlin")
    start = at(ZoneInfo("UTC"), 2026, 1, 10, 0, 0)
    assert utc.next_after(start) - start == 9 * 3600
    assert berlin.next_after(start) - start == 8 * 3600, "09:00 CET is 08:00 UTC in winter"
    summer = at(ZoneInfo("UTC"), 2026, 7, 10, 0, 0)
    assert berlin.next_after(summer) - summer == 7 * 3600, "09:00 CEST is 07:00 UTC"


def test_a_skipped_wall_time_is_shifted_forward_by_the_gap() -> None:
    daily = Cron("30 2 * * *", tz="Europe/Berlin")
    assert walk(daily, at(BERLIN, 2026, 3, 28, 12, 0), 3) == [
        "03-29 03:30+0200",  # 02:30 does not exist that night: one hour later
        "03-30 02:30+0200",
        "03-31 02:30+0200",
    ]


def test_a_shifted_time_that_is_also_a_tick_fires_once() -> None:
    half_hourly = Cron("*/30 * * * *", tz="Europe/Berlin")
    assert walk(half_hourly, at(BERLIN, 2026, 3, 29, 1, 0), 4) == [
        "03-29 01:30+0100",
        "03-29 03:00+0200",  # 02:00 shifted onto 03:00, which is a tick itself
        "03-29 03:30+0200",
        "03-29 04:00+0200",
    ]
    mixed = Cron("0,55 2,3 * * *", tz="Europe/Berlin")
    assert walk(mixed, at(BERLIN, 2026, 3, 29, 1, 0), 3) == [
        "03-29 03:00+0200",  # never 03:55 before 03:00: the earliest instant wins
        "03-29 03:55+0200",
        "03-30 02:00+0200",
    ]


def test_a_repeated_wall_time_fires_once_at_its_first_occurrence() -> None:
    daily = Cron("30 2 * * *", tz="Europe/Berlin")
    ticks = walk(daily, at(BERLIN, 2026, 10, 24, 12, 0), 2)
    assert ticks == ["10-25 02:30+0200", "10-26 02:30+0100"]
    half_hourly = Cron("*/30 * * * *", tz="Europe/Berlin")
    assert walk(half_hourly, at(BERLIN, 2026, 10, 25, 1, 0), 5) == [
        "10-25 01:30+0200",
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 03:00+0100",  # the repeated 02:00-02:59 (CET) does not fire again
        "10-25 03:30+0100",
    ]


def test_a_shifted_tick_is_not_lost_when_the_scheduler_wakes_just_before_it() -> None:
    daily = Cron("30 2 * * *", tz="Europe/Berlin")
    just_before = at(BERLIN, 2026, 3, 29, 3, 28)  # wall 03:28, the shifted 02:30 is at 03:30
    assert walk(daily, just_before, 1) == ["03-29 03:30+0200"]


def test_starting_inside_the_repeated_hour_does_not_fire_its_past_first_pass() -> None:
    half_hourly = Cron("*/30 * * * *", tz="Europe/Berlin")
    second_pass = at(BERLIN, 2026, 10, 25, 2, 10, fold=1)  # 02:10 CET
    assert walk(half_hourly, second_pass, 1) == ["10-25 03:00+0100"]


def test_a_tick_a_moment_away_is_not_skipped() -> None:
    midnight = at(BERLIN, 2026, 3, 29, 0, 0)
    assert Cron("*/30 * * * *", tz="Europe/Berlin").next_after(midnight - 0.0001) == midnight
    assert Cron("* * * * * */10").next_after(midnight - 0.5) == midnight


def test_new_york_dst_and_six_field_seconds() -> None:
    daily = Cron("15 2 * * *", tz="America/New_York")
    assert walk(daily, at(NEW_YORK, 2026, 3, 7, 12, 0), 2, NEW_YORK) == [
        "03-08 03:15-0400",
        "03-09 02:15-0400",
    ]
    every_10s = Cron("* * * * * */10")
    start = at(ZoneInfo("UTC"), 2026, 1, 1, 0, 0, 1)
    assert every_10s.next_after(start) - start == 9


#: Around each 2026 clock change of zones with 1 h (north and south) and 30 min shifts.
NIGHTS = [
    ("Europe/Berlin", (2026, 3, 29)),
    ("Europe/Berlin", (2026, 10, 25)),
    ("America/New_York", (2026, 3, 8)),
    ("America/New_York", (2026, 11, 1)),
    ("Australia/Sydney", (2026, 4, 5)),
    ("Australia/Sydney", (2026, 10, 4)),
    ("Australia/Lord_Howe", (2026, 4, 5)),
    ("Australia/Lord_Howe", (2026, 10, 4)),
]
EXPRS = ["*/30 * * * *", "30 2 * * *", "0,55 2,3 * * *", "*/7 1-4 * * *", "15 * * * *"]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(NIGHTS),
    st.floats(min_value=-36 * 3600, max_value=36 * 3600),
    st.sampled_from(EXPRS),
)
def test_next_after_is_a_step_function(
    night: tuple[str, tuple[int, int, int]], offset: float, expr: str
) -> None:
    """Every instant between t and next_after(t) has the same next tick, so no tick is
    skipped or fired twice however often a scheduler wakes."""
    tz, day = night
    t = at(ZoneInfo(tz), *day, 0, 0) + offset
    cron = Cron(expr, tz=tz)
    nxt = cron.next_after(t)
    assert nxt > t
    for probe in (t + (nxt - t) * f for f in (0.25, 0.5, 0.999)):
        if probe < nxt:  # (float rounding may land a probe on nxt itself)
            assert cron.next_after(probe) == nxt
    assert cron.next_after(nxt) > nxt


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NIGHTS), st.sampled_from(EXPRS))
def test_each_wall_time_of_a_dst_day_fires_at_most_once(
    night: tuple[str, tuple[int, int, int]], expr: str
) -> None:
    tz, day = night
    zone = ZoneInfo(tz)
    cron = Cron(expr, tz=tz)
    t, end = at(zone, *day, 0, 0) - 3600, at(zone, *day, 0, 0) + 30 * 3600
    walls = []
    while (t := cron.next_after(t)) < end:
        walls.append(datetime.fromtimestamp(t, zone).replace(tzinfo=None))
    assert len(walls) == len(set(walls)), "a repeated wall time fired twice"
    assert walls == sorted(walls)


def test_bad_cron_and_zone_say_what_to_fix() -> None:
    with pytest.raises(ConfigurationError, match="Invalid cron expression"):
        Cron("every five minutes")
    with pytest.raises(ConfigurationError, match="Invalid cron expression"):
        Cron("0 0 30 2 *")  # February 30th never comes
    with pytest.raises(ConfigurationError, match="Unknown time zone 'Mars/Base'"):
        Cron("* * * * *", tz="Mars/Base")


# --------------------------------------------------------------------------- every, ids


def test_every_is_aligned_to_its_interval() -> None:
    every = Every(30)
    assert every.next_after(1_800_000_000.0) == 1_800_000_030.0
    assert every.next_after(1_800_000_017.5) == 1_800_000_030.0
    assert Every(0.5).next_after(10.25) == 10.5
    with pytest.raises(ConfigurationError, match="positive interval"):
        Every(0)


def test_tick_ids_are_utc_iso_and_jitter_is_deterministic() -> None:
    t = datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()
    assert tick_id("sales", t) == "tick:sales:2026-03-29T01:00:00Z"
    assert tick_id("fast", t + 0.25) == "tick:fast:2026-03-29T01:00:00.250Z"
    delays = [jitter_for("s", t + i, 5.0) for i in range(200)]
    assert all(0 <= d < 5 for d in delays) and len(set(delays)) > 150
    assert delays == [jitter_for("s", t + i, 5.0) for i in range(200)], "same on every host"
    assert jitter_for("s", t, 0) == 0.0


# --------------------------------------------------------------------------- misfires


def sched(**kw: object) -> Schedule:
    return Schedule(name="s", task="t", trigger=Every(10), **kw)  # type: ignore[arg-type]


def test_on_time_ticks_fire_even_late_within_grace() -> None:
    due = sched(grace_s=30).due(1000, 1025)
    assert due.ticks == [1010, 1020] and due.skipped == 0


def test_skip_drops_ticks_older_than_grace() -> None:
    due = sched(grace_s=5).due(1000, 1100)
    assert due.ticks == [1100] and due.skipped == 9


def test_catch_up_fires_the_most_recent_missed_ticks_up_to_the_limit() -> None:
    due = sched(grace_s=5, misfire="catch_up", max_catch_up=3).due(1000, 1100)
    assert due.ticks == [1070, 1080, 1090, 1100] and due.skipped == 6
    everything = sched(grace_s=5, misfire="catch_up", max_catch_up=50).due(1000, 1100)
    assert everything.ticks == [1010 + 10 * i for i in range(10)] and everything.skipped == 0


def test_catch_up_across_a_dst_night() -> None:
    s = Schedule(
        name="s",
        task="t",
        trigger=Cron("0,55 2,3 * * *", tz="Europe/Berlin"),
        misfire="catch_up",
        max_catch_up=2,
        grace_s=5,
    )
    due = s.due(at(BERLIN, 2026, 3, 20, 1, 0), at(BERLIN, 2026, 3, 29, 12, 0))
    shown = [datetime.fromtimestamp(t, BERLIN).strftime("%d %H:%M") for t in due.ticks]
    assert shown == ["29 03:00", "29 03:55"]
    assert due.skipped == 9 * 4


def test_schedule_options_are_checked_at_declaration() -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError, match="misfire must be"):

        @app.every(seconds=5, misfire="sometimes", name="a")  # type: ignore[arg-type]
        async def a() -> None: ...

    with pytest.raises(ConfigurationError, match="do not fit"):

        @app.cron("* * * * *", args=(1, 2), name="b")
        async def b(x: int) -> None: ...

    @app.every(seconds=5)
    @app.cron("0 * * * *", schedule_name="hourly", name="c")
    async def c() -> None: ...

    assert {s.name: s.task for s in app.schedules.values()} == {"hourly": "c", "c": "c"}
    with pytest.raises(ConfigurationError, match="already exists"):
        app.every(seconds=1)(c)
