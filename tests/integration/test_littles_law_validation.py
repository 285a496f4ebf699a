"""The analytics against queueing theory: an M/M/c run, short, with loose bounds.

``benchmarks/littles_law.py`` is the long form (15 % bounds over two minutes). The
theory check runs on the memory broker, whose own latency is negligible next to the
30 ms service times; on the other backends the broker's round trips (and fsyncs) add to
every job's wait and service, so the system is no longer the M/M/c of the nominal S, but
Little's Law must still hold on what is measured.
"""

from __future__ import annotations

import pytest
from benchmarks.littles_law import Theory, measure, rel

LAM, SERVICE, SLOTS = 80.0, 0.03, 4  # rho = 0.6


@pytest.mark.timeout(60)
async def test_measured_w_and_l_match_erlang_c() -> None:
    m = await measure(
        "memory://", lam=LAM, service_s=SERVICE, slots=SLOTS, warmup_s=2, duration_s=10, seed=7
    )
    theory = Theory.mmc(LAM, SERVICE, SLOTS)
    assert m.jobs > 600
    assert abs(rel(m.lam, LAM)) <= 0.15, m
    assert abs(rel(m.w, theory.w)) <= 0.25, (m, theory)
    assert abs(rel(m.l, theory.l)) <= 0.25, (m, theory)
    assert m.little_error <= 0.10, m


@pytest.mark.timeout(60)
async def test_littles_law_holds_on_what_every_backend_measures(app_url: str) -> None:
    m = await measure(
        app_url, lam=LAM, service_s=SERVICE, slots=SLOTS, warmup_s=1, duration_s=5, seed=3
    )
    assert m.jobs > 250
    assert abs(rel(m.lam, LAM)) <= 0.2, m
    assert m.little_error <= 0.10, m
    assert m.service >= SERVICE * 0.9 and m.w >= m.service, m
