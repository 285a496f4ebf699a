"""The load generator: drive both order endpoints, open-loop, and measure them.

Open-loop means each request is sent at its scheduled time (``i / rate`` seconds after
the start) whether or not earlier ones have been answered, as real users do, and its
latency is counted from that scheduled time: a server that falls behind cannot hide it
by slowing the generator down (no "coordinated omission").

It speaks HTTP/1.1 over asyncio streams itself, with keep-alive connections: a general
client (httpx) spends more CPU per request than the server it measures once hundreds of
requests are in flight.

It drives ``POST /orders`` (202 or 429) first, waits for the orders queue to drain, then
``POST /orders/sync``, each at ``rate`` for ``duration_s``, while sampling ``GET /queue``
to see the orders queue's depth against its bound. Run it as a separate process (the
demo does, with :func:`drive_apart`) so it does not take the CPU of the server it
measures; it prints progress ticks and then the report as JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from offload.demo.client import Client, HttpError, Response
from offload.demo.orders import random_request

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "LoadPlan",
    "LoadReport",
    "PathReport",
    "Tick",
    "drive",
    "drive_apart",
    "parse_duration",
    "parse_rate",
]

ASYNC_PATH = "/orders"
SYNC_PATH = "/orders/sync"


@dataclass(frozen=True)
class LoadPlan:
    """What to send.

    Attributes:
        rate: requests per second to each endpoint.
        duration_s: how long to drive each endpoint.
        timeout_s: a request not answered this long after its scheduled time counts as
            timed out (and is abandoned).
        max_connections: connections open at once per endpoint (requests beyond wait
            for one, and that wait counts in their latency).
        drain_s: at most this long to wait for the orders queue to empty between the two.
        seed: seed of the random orders.
    """

    rate: float
    duration_s: float
    timeout_s: float = 10.0
    max_connections: int = 256
    drain_s: float = 60.0
    seed: int = 7


class PathReport(msgspec.Struct, kw_only=True):
    """How one endpoint answered.

    Attributes:
        path: the endpoint.
        sent: requests sent.
        ok: answered 2xx (202 for ``/orders``, 200 for ``/orders/sync``).
        rejected: answered 429.
        failed: any other answer, or no connection.
        timed_out: not answered within the plan's ``timeout_s``.
        p50_s, p99_s, max_s: latency from each request's scheduled time, over every
            request: answered ones (429s included) and timed-out ones, which count as
            ``timeout_s`` (leaving them out would flatter a server that makes most clients
            give up); ``None`` when nothing was sent.
        retry_after_s: the ``Retry-After`` values (seconds) the 429s carried, as
            ``{value: count}``.
        estimate_s: median of the exact estimates in the 429 bodies (``retry_after_s``).
        accepted_per_s: ``ok`` per second of the phase.
        elapsed_s: from the first scheduled send to the last answer.
    """

    path: str
    sent: int = 0
    ok: int = 0
    rejected: int = 0
    failed: int = 0
    timed_out: int = 0
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    retry_after_s: dict[str, int] = msgspec.field(default_factory=dict)
    estimate_s: float | None = None
    accepted_per_s: float = 0.0
    elapsed_s: float = 0.0


class LoadReport(msgspec.Struct, kw_only=True):
    """Both endpoints side by side, and the orders queue as the generator saw it.

    Attributes:
        rate, duration_s: the plan.
        async_path, sync_path: how each endpoint answered.
        max_depth: the orders queue's bound.
        depth_max: the deepest the queue was seen (sampled every 0.2 s).
        depth_samples: how many samples were taken.
        drained_s: how long the queue took to empty after the async phase (``None``: it
            did not within the plan's ``drain_s``).
    """

    rate: float
    duration_s: float
    async_path: PathReport
    sync_path: PathReport
    max_depth: int | None = None
    depth_max: int = 0
    depth_samples: int = 0
    drained_s: float | None = None


class Tick(msgspec.Struct, kw_only=True):
    """Progress, about once a second: the phase, seconds into it, answers so far, depth."""

    path: str
    t: float
    sent: int
    ok: int
    rejected: int
    failed: int
    timed_out: int
    depth: int | None
    max_depth: int | None = None


@dataclass
class _Tally:
    path: str
    sent: int = 0
    ok: int = 0
    rejected: int = 0
    failed: int = 0
    timed_out: int = 0
    latencies: list[float] = field(default_factory=list)
    retry_after: dict[str, int] = field(default_factory=dict)
    estimates: list[float] = field(default_factory=list)

    def answer(self, response: Response, latency: float) -> None:
        self.latencies.append(latency)
        if 200 <= response.status < 300:
            self.ok += 1
        elif response.status == 429:
            self.rejected += 1
            header = response.headers.get("retry-after", "?")
            self.retry_after[header] = self.retry_after.get(header, 0) + 1
            with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError, ValueError):
                self.estimates.append(float(response.json()["retry_after_s"]))  # type: ignore[index]
        else:
            self.failed += 1

    def report(self, elapsed: float, duration: float) -> PathReport:
        lat = sorted(self.latencies)
        return PathReport(
            path=self.path,
            sent=self.sent,
            ok=self.ok,
            rejected=self.rejected,
            failed=self.failed,
            timed_out=self.timed_out,
            p50_s=_pct(lat, 0.50),
            p99_s=_pct(lat, 0.99),
            max_s=lat[-1] if lat else None,
            retry_after_s=dict(sorted(self.retry_after.items())),
            estimate_s=_pct(sorted(self.estimates), 0.5),
            accepted_per_s=self.ok / duration if duration > 0 else 0.0,
            elapsed_s=elapsed,
        )


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


class _Depth:
    """Samples ``GET /queue`` while a phase runs."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last: int | None = None
        self.deepest = 0
        self.samples = 0
        self.max_depth: int | None = None

    async def sample(self) -> dict[str, int] | None:
        try:
            answer = await self.client.get("/queue")
            orders: dict[str, int] = msgspec.json.decode(answer.body)["orders"]
        except (HttpError, msgspec.DecodeError, KeyError, TypeError):
            return None
        self.last = orders["depth"]
        self.deepest = max(self.deepest, orders["depth"])
        self.max_depth = orders.get("max_depth")
        self.samples += 1
        return orders

    async def run(self, every_s: float = 0.2) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(every_s)

    async def drained(self, limit_s: float) -> float | None:
        """Seconds until the orders queue is empty and idle (``None``: not within limit)."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            orders = await self.sample()
            if orders is not None and orders["depth"] == 0 and orders["running"] == 0:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        return None


async def _phase(
    base_url: str, path: str, plan: LoadPlan, depth: _Depth, on_tick: Callable[[Tick], None]
) -> PathReport:
    tally = _Tally(path)
    rng = random.Random(plan.seed)
    client = Client(base_url, plan.max_connections)
    loop = asyncio.get_running_loop()

    async def one(body: bytes, at: float) -> None:
        try:
            async with asyncio.timeout_at(at + plan.timeout_s):
                response = await client.post(path, body)
        except TimeoutError:
            tally.timed_out += 1
            tally.latencies.append(plan.timeout_s)
            return
        except HttpError:
            tally.failed += 1
            return
        tally.answer(response, loop.time() - at)

    try:
        start = loop.time() + 0.05
        n = max(1, round(plan.rate * plan.duration_s))
        pending: set[asyncio.Task[None]] = set()
        next_tick = 1.0
        for i in range(n):
            at = start + i / plan.rate
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            task = loop.create_task(one(msgspec.json.encode(random_request(rng)), at))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tally.sent += 1
            if at - start >= next_tick:
                next_tick += 1.0
                on_tick(_tick(tally, at - start, depth))
        if pending:
            await asyncio.wait(pending)
        return tally.report(loop.time() - start, plan.duration_s)
    finally:
        await client.close()


def _tick(tally: _Tally, t: float, depth: _Depth) -> Tick:
    return Tick(
        path=tally.path,
        t=round(t, 1),
        sent=tally.sent,
        ok=tally.ok,
        rejected=tally.rejected,
        failed=tally.failed,
        timed_out=tally.timed_out,
        depth=depth.last,
        max_depth=depth.max_depth,
    )


async def drive(
    base_url: str, plan: LoadPlan, on_tick: Callable[[Tick], None] = lambda tick: None
) -> LoadReport:
    """Drive ``POST /orders``, let the queue drain, then drive ``POST /orders/sync``."""
    probe = Client(base_url, 1)
    depth = _Depth(probe)
    sampler = asyncio.get_running_loop().create_task(depth.run(), name="load-depth")
    try:
        async_report = await _phase(base_url, ASYNC_PATH, plan, depth, on_tick)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    drained = await depth.drained(plan.drain_s)
    sync_report = await _phase(base_url, SYNC_PATH, plan, depth, on_tick)
    await probe.close()
    return LoadReport(
        rate=plan.rate,
        duration_s=plan.duration_s,
        async_path=async_report,
        sync_path=sync_report,
        max_depth=depth.max_depth,
        depth_max=depth.deepest,
        depth_samples=depth.samples,
        drained_s=drained,
    )


def parse_rate(text: str) -> float:
    """``"200/s"``, ``"200"``, ``"600/m"`` -> requests per second.

    Raises:
        ValueError: anything else, or not a positive rate.
    """
    number, _, unit = text.strip().partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0}.get(unit.strip())
    try:
        rate = float(number) / per if per else -1.0
    except ValueError:
        rate = -1.0
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"cannot read the rate {text!r}: give requests per second, e.g. 200/s")
    return rate


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"30"`` -> seconds.

    Raises:
        ValueError: anything else, or not a positive duration.
    """
    text = text.strip()
    scale = {"s": 1.0, "m": 60.0}.get(text[-1:], 1.0)
    try:
        seconds = float(text[:-1] if text[-1:] in ("s", "m") else text) * scale
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot read the duration {text!r}: e.g. 30s or 2m")
    return seconds


class _Line(msgspec.Struct, omit_defaults=True):
    """One line the generator's process prints."""

    tick: Tick | None = None
    report: LoadReport | None = None


_lines = msgspec.json.Encoder()


async def drive_apart(
    base_url: str, plan: LoadPlan, on_tick: Callable[[Tick], None] = lambda tick: None
) -> LoadReport | None:
    """:func:`drive` in a child process (``python -m offload.demo.load``), so that the
    generator does not take the CPU of a server in this process. ``None``: the child
    stopped without a report (its error is on stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "offload.demo.load",
        base_url,
        _lines.encode(plan).decode(),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    decoder = msgspec.json.Decoder(_Line)
    try:
        async for raw in proc.stdout:
            line = decoder.decode(raw)
            if line.tick is not None:
                on_tick(line.tick)
            if line.report is not None:
                return line.report
        return None
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def _emit(line: _Line) -> None:
    sys.stdout.buffer.write(_lines.encode(line) + b"\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    """``python -m offload.demo.load URL PLAN_JSON``: JSON lines on stdout, one
    ``{"tick": ...}`` about every second, then ``{"report": ...}``."""
    url, plan_json = argv
    plan = msgspec.json.decode(plan_json, type=LoadPlan)
    try:
        report = asyncio.run(drive(url, plan, lambda tick: _emit(_Line(tick=tick))))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: stop quietly
        sys.exit(130)
    _emit(_Line(report=report))


if __name__ == "__main__":
    main(sys.argv[1:])
