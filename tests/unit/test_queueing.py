"""Queueing formulas against published values, percentiles, and retry-after estimates."""

from __future__ import annotations

import math

import pytest

from offload.brokers.base import JobState, Timing
from offload.metrics.estimates import MAX_RETRY_AFTER_S, UNKNOWN_RETRY_AFTER_S, retry_after_s
from offload.metrics.littles_law import completion_rate, percentiles
from offload.metrics.queueing import erlang_c, mmc, slots_for_wait


def erlang_c_textbook(c: int, a: float) -> float:
    """The closed form, summed directly (the recursion in the library must agree)."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.0), (4, 3.0), (10, 8.0), (30, 25.0)])
def test_erlang_c_matches_the_closed_form(c: int, a: float) -> None:
    assert erlang_c(c, a) == pytest.approx(erlang_c_textbook(c, a), rel=1e-12)


def test_known_values() -> None:
    # M/M/1: P(wait) = rho; M/M/2 with a = 1: 1/3 (Kleinrock, Queueing Systems vol. 1).
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0, "at or over capacity every job waits"
    q = mmc(lam=1.0, service_s=0.5, c=1)  # M/M/1, rho = 0.5: W = S / (1 - rho) = 1
    assert q is not None
    assert q.time_in_system_s == pytest.approx(1.0) and q.in_system == pytest.approx(1.0)
    assert q.wait_s == pytest.approx(0.5) and q.waiting == pytest.approx(0.5)
    assert mmc(lam=10.0, service_s=1.0, c=10) is None, "rho = 1 has no steady state"


def test_erlang_c_is_stable_for_thousands_of_slots() -> None:
    p = erlang_c(5000, 4900.0)
    assert 0.0 < p < 1.0


@pytest.mark.parametrize(
    ("lam", "s", "target"), [(60, 0.05, 0.025), (60, 0.05, 0.001), (1000, 1.0, 0.01), (3, 2, 5)]
)
def test_slots_for_wait_is_the_fewest_that_meet_the_target(
    lam: float, s: float, target: float
) -> None:
    c = slots_for_wait(lam, s, target)
    assert c is not None
    best = mmc(lam, s, c)
    assert best is not None and best.wait_s <= target
    fewer = mmc(lam, s, c - 1) if c > 1 else None
    assert fewer is None or fewer.wait_s > target


def test_slots_for_wait_edges() -> None:
    assert slots_for_wait(0.0, 1.0, 1.0) == 1
    with pytest.raises(ValueError, match="target_wait_s"):
        slots_for_wait(1.0, 1.0, 0.0)


def test_percentiles_interpolate() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert p.count == 100 and p.mean == pytest.approx(50.5)
    assert p.p50 == pytest.approx(50.5) and p.p95 == pytest.approx(95.05)
    assert p.p99 == pytest.approx(99.01)
    assert percentiles([]).p50 is None and percentiles([2.0]).p99 == 2.0


def _finished_at(times: list[float]) -> list[Timing]:
    return [Timing("t", JobState.SUCCEEDED, t - 1, t - 1, t - 0.5, t) for t in times]


def test_completion_rate_counts_recent_completions_up_to_now() -> None:
    ts = _finished_at([100 + i * 0.1 for i in range(50)])  # 10/s for 5 s
    assert completion_rate(ts, now=104.9) == pytest.approx(50 / 4.9)
    # The same completions seen 60 s later: the queue stalled, and the rate shows it.
    assert completion_rate(ts, now=164.9) == pytest.approx(50 / 64.9)
    assert completion_rate(ts[:3], now=104.9) is None, "too few to measure"


def test_retry_after_drains_a_tenth_of_the_bound_at_the_measured_rate() -> None:
    assert retry_after_s(depth=100, max_depth=100, rate=50.0) == pytest.approx(10 / 50)
    assert retry_after_s(depth=120, max_depth=100, rate=10.0) == pytest.approx(30 / 10)
    assert retry_after_s(depth=5, max_depth=5, rate=2.0) == pytest.approx(0.5)
    assert retry_after_s(depth=100, max_depth=100, rate=None) == UNKNOWN_RETRY_AFTER_S
    assert retry_after_s(depth=100, max_depth=100, rate=1e-6) == MAX_RETRY_AFTER_S
    assert retry_after_s(depth=100, max_depth=100, rate=1e9) == pytest.approx(0.05)
