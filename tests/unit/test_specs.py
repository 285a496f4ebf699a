"""Rates, argument binding and retry policies."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

import pytest

from offload import RetryPolicy, constant, exponential
from offload.errors import ConfigurationError
from offload.specs import Binder, BindError, Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "per_s", "burst"),
    [("100/s", 100, 10), ("10/m", 10 / 60, 1), ("5/10s", 0.5, 1), ("3600/h", 1, 1)],
)
def test_parse_rate(text: str, per_s: float, burst: float) -> None:
    rate = parse_rate(text)
    assert rate == Rate(pytest.approx(per_s), burst)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["100", "fast", "10/fortnight", "0/s"])
def test_bad_rate_says_how_to_write_it(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"COUNT/UNIT|positive"):
        parse_rate(text)


@dataclass
class Point:
    x: int
    y: int


def f(a: int, when: datetime, p: Point, *, flag: bool = False) -> None: ...


def test_binder_converts_json_values_to_annotations() -> None:
    args, kwargs = Binder(f).bind([1, "2026-11-27T10:00:00", {"x": 1, "y": 2}], {"flag": True})
    assert args == [1, datetime(2026, 11, 27, 10), Point(1, 2)]
    assert kwargs == {"flag": True}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([1], {}, "missing a required argument"),
        ([1, "2026-01-01T00:00:00", {"x": 1, "y": 2}, 4], {}, "too many positional"),
        (["one", "2026-01-01T00:00:00", {"x": 1, "y": 2}], {}, "argument 'a'"),
        ([1, "2026-01-01T00:00:00", {"x": "no"}], {}, "argument 'p'"),
        ([1, "2026-01-01T00:00:00", {"x": 1, "y": 2}], {"nope": 1}, "unexpected keyword"),
    ],
)
def test_binder_reports_bad_arguments(
    args: list[object], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BindError, match=message):
        Binder(f).bind(args, kwargs)


def test_exponential_backoff_grows_with_jitter_inside_bounds() -> None:
    policy = exponential(base=1, factor=2, max_delay=10)
    rng = random.Random(1)
    for attempt, full in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        d = policy.delay(attempt, rng)
        assert full / 2 <= d <= full


def test_constant_and_no_jitter() -> None:
    assert constant(3).delay(7) == 3
    assert RetryPolicy(base=2, factor=3, jitter=False).delay(3) == 18


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(base=-1)
