"""Connection settings and error mapping for the PostgreSQL broker.

The URL is a libpq URL plus offload's own query parameters, which are taken out before
the rest reaches psycopg::

    postgresql://user:password@host:5432/db?schema=offload&pool_max_size=20&sslmode=require

=================  =========  =====================================================
``schema``         offload    the schema that holds offload's tables and functions
``pool_min_size``  1          connections kept open
``pool_max_size``  10         connections at most
``pool_timeout``   10         seconds to wait for a free connection
=================  =========  =====================================================

Every other parameter (``sslmode``, ``connect_timeout``, ``application_name``, ...) is
libpq's. Errors leave this module as :class:`~offload.errors.BrokerUnavailable`
(transient) or :class:`~offload.errors.BrokerError`, with the URL redacted and the
driver's exception chained by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from offload.brokers._pg_sql import valid_schema
from offload.brokers.base import redact_url
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError, SchemaOutOfDate

__all__ = ["PgSettings", "map_error", "parse_url"]

_OWN_PARAMS = ("schema", "pool_min_size", "pool_max_size", "pool_timeout")
_DEFAULT_CONNECT_TIMEOUT = "5"

# SQLSTATEs worth retrying. Busy: serialization failure, deadlock, lock not available,
# query cancelled. Unreachable: admin or crash shutdown, cannot connect now, too many
# connections, out of resources, and the connection exception class.
_BUSY = re.compile(r"40001|40P01|55P03|57014")
_UNREACHABLE = re.compile(r"57P0[1-4]|53[0-9]{3}|08[0-9A-Z]{3}")
_SCHEMA_MISSING = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedFunction,
    pg_errors.InvalidSchemaName,
)
# Connection failures that waiting will not fix: the server answered and said no.
_REFUSED = re.compile(
    r"does not exist|authentication failed|no pg_hba\.conf entry|permission denied", re.I
)


@dataclass(frozen=True)
class PgSettings:
    """A parsed broker URL: what goes to psycopg, and offload's own options."""

    conninfo: str
    redacted: str
    schema: str
    pool_min_size: int
    pool_max_size: int
    pool_timeout: float


def parse_url(url: str) -> PgSettings:
    """Split a ``postgresql://`` URL into libpq's part and offload's options.

    Raises:
        ConfigurationError: an option has a bad value, or the schema is not a plain
            identifier.
    """
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in params if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OWN_PARAMS]
    if not any(k == "connect_timeout" for k, _ in rest):
        rest.append(("connect_timeout", _DEFAULT_CONNECT_TIMEOUT))
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
    redacted = redact_url(urlunsplit(parts._replace(query="")))
    schema = own.get("schema", "offload")
    if not valid_schema(schema):
        raise ConfigurationError(
            f"Invalid schema {schema!r} in the broker URL {redacted}: use letters, digits "
            "and underscores, not starting with a digit (at most 63 characters)."
        )
    return PgSettings(
        conninfo=conninfo,
        redacted=redacted,
        schema=schema,
        pool_min_size=int(_number(own, "pool_min_size", 1, redacted)),
        pool_max_size=int(_number(own, "pool_max_size", 10, redacted)),
        pool_timeout=_number(own, "pool_timeout", 10.0, redacted),
    )


def _number(own: dict[str, str], name: str, default: float, where: str) -> float:
    raw = own.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigurationError(
            f"Invalid {name}={raw!r} in the broker URL {where}: it must be a positive number."
        )
    return value


def map_error(exc: BaseException, settings: PgSettings) -> BrokerError:
    """The offload error for a driver error (raise it ``from exc``)."""
    where = settings.redacted
    detail = _first_line(exc)
    if isinstance(exc, _SCHEMA_MISSING):
        return SchemaOutOfDate(
            f"The offload schema {settings.schema!r} at {where} is missing or incomplete "
            f"({detail}): run `offload db migrate`."
        )
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if _BUSY.fullmatch(sqlstate):
        return BrokerUnavailable(f"PostgreSQL at {where} is busy ({detail}); offload retries.")
    if _is_unreachable(exc, sqlstate):
        return BrokerUnavailable(
            f"PostgreSQL at {where} is unavailable ({detail}). offload retries; check that "
            "the server is running and reachable."
        )
    return BrokerError(f"PostgreSQL at {where} failed: {detail}")


def _is_unreachable(exc: BaseException, sqlstate: str) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if sqlstate:
        return _UNREACHABLE.fullmatch(sqlstate) is not None
    return isinstance(exc, psycopg.OperationalError) and not _REFUSED.search(str(exc))


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
