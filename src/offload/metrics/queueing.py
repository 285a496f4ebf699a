"""Queueing theory for predictions: the M/M/c queue (Erlang C).

The model: jobs arrive as a Poisson process at rate ``lam`` (λ, jobs/s), each needs an
exponentially distributed service time with mean ``service_s`` (S, so μ = 1/S), and ``c``
identical slots serve one FIFO queue. With offered load a = λS and utilisation
rho = a/c < 1 the queue is stable and, in steady state,

* the probability that an arriving job must wait is Erlang C, ``C(c, a)``;
* the mean wait is ``Wq = C(c, a) / (cμ - λ)``, the mean time in system ``W = Wq + S``;
* the mean number waiting is ``Lq = λ·Wq`` and in system ``L = λ·W`` (Little's Law).

Real job streams are rarely exactly Poisson and exponential: the numbers are a planning
estimate, stated beside their assumptions wherever they are shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MMc", "erlang_c", "mmc", "slots_for_wait"]

#: The most slots :func:`slots_for_wait` will suggest before giving up.
MAX_SLOTS = 100_000


def erlang_c(c: int, a: float) -> float:
    """The probability that an arriving job waits in an M/M/c queue with offered load ``a``.

    Computed through the Erlang B recursion (stable for thousands of slots). Returns 1.0
    when ``a >= c`` (the queue is unstable: every job eventually waits).

    Raises:
        ValueError: ``c < 1`` or ``a < 0``.
    """
    if c < 1 or a < 0:
        raise ValueError("erlang_c needs c >= 1 slots and a load a >= 0")
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1.0 - rho * (1.0 - b))


@dataclass(frozen=True, slots=True)
class MMc:
    """Steady-state means of an M/M/c queue (see the module docstring).

    Attributes:
        c: slots.
        utilisation: rho = λS/c.
        p_wait: the probability that a job waits (Erlang C).
        wait_s: mean wait before service (Wq).
        time_in_system_s: mean time from arrival to completion (W).
        waiting: mean jobs waiting (Lq).
        in_system: mean jobs in the system (L).
    """

    c: int
    utilisation: float
    p_wait: float
    wait_s: float
    time_in_system_s: float
    waiting: float
    in_system: float


def mmc(lam: float, service_s: float, c: int) -> MMc | None:
    """The steady state of an M/M/c queue, or ``None`` when it has none (λS >= c)."""
    if lam < 0 or service_s <= 0 or c < 1:
        raise ValueError("mmc needs lam >= 0, service_s > 0 and c >= 1")
    a = lam * service_s
    if a >= c:
        return None
    p = erlang_c(c, a)
    wq = p / (c / service_s - lam)
    return MMc(
        c=c,
        utilisation=a / c,
        p_wait=p,
        wait_s=wq,
        time_in_system_s=wq + service_s,
        waiting=lam * wq,
        in_system=lam * (wq + service_s),
    )


def slots_for_wait(lam: float, service_s: float, target_wait_s: float) -> int | None:
    """The fewest slots that keep the M/M/c mean wait at or under ``target_wait_s``.

    ``None`` if even :data:`MAX_SLOTS` slots would not. With no arrivals one slot suffices.

    Raises:
        ValueError: ``target_wait_s <= 0`` (any arrival stream makes some job wait).
    """
    if target_wait_s <= 0:
        raise ValueError("target_wait_s must be > 0")
    if lam <= 0:
        return 1

    def enough(c: int) -> bool:
        state = mmc(lam, service_s, c)
        return state is not None and state.wait_s <= target_wait_s

    low = max(1, math.floor(lam * service_s) + 1)  # the fewest slots with a steady state
    if enough(low):
        return low
    high = low
    while not enough(high):  # the mean wait falls as slots are added: double, then bisect
        if high >= MAX_SLOTS:
            return None
        low, high = high, min(MAX_SLOTS, high * 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high
