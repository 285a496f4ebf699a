"""Brokers: storage and delivery behind one protocol, chosen by URL.

=============================  =======================================================
``memory://``                  this process only; tests and eager use
``sqlite:///path/to/file.db``  the default: embedded, durable, many processes on one host
``redis://host:6379/0``        distributed; ``rediss://`` for TLS
``postgresql://user@host/db``  distributed, transactional enqueue
=============================  =======================================================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from offload.brokers.base import Broker, Capabilities, redact_url
from offload.clock import Clock, system_clock
from offload.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_URL", "Broker", "Capabilities", "open_broker", "scheme_of"]

DEFAULT_URL = "sqlite:///offload.db"

# scheme -> (module, class, pip extra that provides its client library)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "memory": ("offload.brokers.memory", "MemoryBroker", None),
    "sqlite": ("offload.brokers.sqlite", "SqliteBroker", None),
    "redis": ("offload.brokers.redis", "RedisBroker", "redis"),
    "rediss": ("offload.brokers.redis", "RedisBroker", "redis"),
    "redis+sentinel": ("offload.brokers.redis", "RedisBroker", "redis"),
    "postgresql": ("offload.brokers.postgres", "PostgresBroker", "postgres"),
    "postgres": ("offload.brokers.postgres", "PostgresBroker", "postgres"),
}


def scheme_of(url: str) -> str:
    """The URL's scheme, validated against the known backends."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in ("memory", "sqlite", "redis", "postgresql"))
        raise ConfigurationError(
            f"Unknown broker URL {redact_url(url)!r}: the scheme must be one of {known} "
            "(for example sqlite:///offload.db or redis://localhost:6379/0)."
        )
    return scheme


def open_broker(url: str, *, clock: Clock = system_clock, **options: Any) -> Broker:
    """Build the broker for ``url`` (not yet opened: call ``await broker.open()``).

    Raises:
        ConfigurationError: unknown scheme, or the backend's client library is missing.
    """
    module_name, class_name, extra = _BACKENDS[scheme_of(url)]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None or exc.name == module_name:
            raise
        raise ConfigurationError(
            f"The {extra} backend needs its client library: pip install 'offload[{extra}]'"
        ) from exc
    factory: Callable[..., Broker] = getattr(module, class_name)
    return factory(url, clock=clock, **options)
