"""What the worker knows about tasks and subscribers: plain, frozen specs.

The app layer builds these from decorators; the worker runs them. Keeping them here, below
both, lets the worker run jobs without importing the app (DESIGN.md's layers).
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from offload.errors import ConfigurationError
from offload.retry import RetryPolicy

if TYPE_CHECKING:
    from offload.middleware import Middleware

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "BindError",
    "Binder",
    "ExecutorKind",
    "Rate",
    "Registry",
    "SubscriberSpec",
    "TaskSpec",
    "parse_rate",
]

ExecutorKind = Literal["async", "thread", "process"]


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: ``per_s`` jobs a second on average, bursts up to ``burst``."""

    per_s: float
    burst: float

    def __str__(self) -> str:
        return f"{self.per_s:g}/s (burst {self.burst:g})"


_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([a-z]+)\s*$")


def parse_rate(text: str | Rate | None, burst: float | None = None) -> Rate | None:
    """Parse ``"100/s"``, ``"10/m"``, ``"5/10s"`` or ``"1000/h"`` into a :class:`Rate`.

    The burst defaults to a tenth of a second's worth of tokens, at least one: starts are
    spread evenly (``"50/s"`` starts a job every 20 ms, five at once at most), so the
    rate holds over any interval, not only on average over each whole unit.
    """
    if text is None or isinstance(text, Rate):
        return text
    m = _RATE_RE.match(text.lower())
    if not m or m.group(3) not in _UNITS:
        raise ConfigurationError(
            f"Cannot read rate {text!r}: write it as COUNT/UNIT, e.g. '100/s', '10/m', '5/10s'."
        )
    count, span, unit = float(m.group(1)), float(m.group(2) or 1), _UNITS[m.group(3)]
    per_s = count / (span * unit)
    if per_s <= 0:
        raise ConfigurationError(f"Rate {text!r} must be positive.")
    return Rate(per_s, burst if burst is not None else max(1.0, per_s / 10))


class BindError(Exception):
    """Arguments that do not fit the function's signature or annotations."""


class Binder:
    """Checks and converts decoded arguments to a function's signature, once per call.

    JSON has no datetimes, UUIDs or dataclasses; annotated parameters are converted with
    msgspec (``datetime``, ``UUID``, Structs, dataclasses, ``list[int]`` ...). Values that
    already have the annotated type skip conversion, so plain calls stay cheap.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable forward references: check arity only
            hints = {}
        self._types: dict[str, Any] = {
            name: hints[name]
            for name, p in self.signature.parameters.items()
            if name in hints and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        self._fast = {name: _plain_type(t) for name, t in self._types.items()}
        self._simple = all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in self.signature.parameters.values()
        )
        self._names = list(self.signature.parameters)

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Return ``(args, kwargs)`` converted; raise :class:`BindError` saying what is wrong."""
        if self._simple and not kwargs and len(args) == len(self._names):
            return self._convert_positional(args), kwargs
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise BindError(str(exc)) from exc
        for name, value in bound.arguments.items():
            if name in self._types:
                bound.arguments[name] = self._convert(name, value)
        return list(bound.args), dict(bound.kwargs)

    def _convert_positional(self, args: list[Any]) -> list[Any]:
        if not self._types:
            return args
        return [
            self._convert(n, v) if n in self._types else v
            for n, v in zip(self._names, args, strict=False)
        ]

    def _convert(self, name: str, value: Any) -> Any:
        fast = self._fast[name]
        if fast is not None and type(value) is fast:
            return value
        try:
            return msgspec.convert(value, self._types[name], strict=False)
        except (msgspec.ValidationError, TypeError) as exc:
            raise BindError(f"argument {name!r}: {exc}") from exc


def _plain_type(t: Any) -> type | None:
    if t in (str, int, float, bool, bytes) or t is Any:
        return None if t is Any else typing.cast("type", t)
    origin = typing.get_origin(t)
    if origin in (list, dict) and not typing.get_args(t):
        return typing.cast("type", origin)
    return None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task as the worker runs it.

    Attributes:
        name: the registered name (module.qualname unless given).
        fn: the function.
        executor: ``async`` for coroutine functions, else ``thread`` (default) or ``process``.
        queue: the default queue.
        max_attempts: 1 + retries.
        timeout_s: per-attempt time limit, or ``None``.
        retry: backoff between attempts.
        retry_on: exception types that are retried (others go straight to dead).
        rate: a rate limit shared by all workers, or ``None``.
        rate_per_key: apply ``rate`` per job key instead of per task.
        lease_s: lease length for this task's jobs (``None``: the worker's).
    """

    name: str
    fn: Callable[..., Any]
    executor: ExecutorKind
    binder: Binder
    queue: str = "default"
    max_attempts: int = 1
    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    rate: Rate | None = None
    rate_per_key: bool = False
    lease_s: float | None = None
    result_type: Any = None


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    """A subscriber group's handler for one topic.

    ``event_type`` (from the handler's annotation) validates each event on receipt; a bad
    event is dead-lettered with the validation error.
    """

    topic: str
    group: str
    fn: Callable[..., Any]
    executor: ExecutorKind
    event_type: Any = None
    max_attempts: int = 1
    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    from_start: bool = False
    lease_s: float | None = None


@dataclass(frozen=True)
class Registry:
    """Everything a worker needs from an app: specs by name, and how to encode results."""

    tasks: Mapping[str, TaskSpec]
    subscribers: Mapping[str, SubscriberSpec]  # by group queue (``group@topic``)
    codec_name: str = "json"
    max_payload: int | None = 1 << 20
    default_queues: tuple[str, ...] = ("default",)
    middleware: tuple[Middleware, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)
