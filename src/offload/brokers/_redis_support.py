"""Plumbing for the Redis broker: URLs, the client, the error boundary, keys, scripts.

Nothing here knows job semantics; those live in ``redis_lua/*.lua``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from offload.brokers.base import redact_url
from offload.errors import BrokerError, BrokerUnavailable, ConfigurationError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "SCRIPTS",
    "Boundary",
    "Keys",
    "RedisSettings",
    "Scripts",
    "make_client",
    "parse_url",
    "tag_of",
]

DEFAULT_PREFIX = "offload"
#: offload's own query parameters; everything else is handed to redis-py.
OWN_PARAMS = frozenset({"prefix", "strict", "max_connections", "pool_timeout", "scripts"})
#: How scripts are run (``?scripts=``): see Scripts.
SCRIPT_MODES = ("auto", "functions", "eval")
#: Defaults for redis-py unless the URL sets them (``?socket_timeout=...``). Blocking
#: waits are cut into slices shorter than the socket timeout (see ``RedisSettings``).
POOL_SIZE = 64  # connections per broker; more concurrent calls wait their turn
POOL_TIMEOUT_S = 30.0  # how long a call waits for a connection before BrokerUnavailable

CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 10.0,
    "socket_connect_timeout": 3.0,
    "health_check_interval": 30,
    "socket_keepalive": True,
}

SCRIPTS = (
    "enqueue",
    "claim",
    "extend",
    "settle",
    "recover",
    "prune",
    "cancel",
    "progress",
    "jobs",
    "requeue",
    "delete",
    "list_jobs",
    "timings",
    "publish",
    "ensure_topic",
    "replay",
    "trim_topic",
    "lease",
    "release_lease",
    "tokens",
    "forget_workers",
)


@dataclass(frozen=True)
class RedisSettings:
    """What a broker URL says: where Redis is, and offload's own options."""

    url: str
    prefix: str
    client_url: str
    sentinels: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    db: int = 0
    password: str | None = None
    username: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    strict: bool = False
    max_connections: int = POOL_SIZE
    pool_timeout_s: float = POOL_TIMEOUT_S
    scripts: str = "auto"

    @property
    def block_slice_s(self) -> float:
        """The longest single blocking wait: well inside the socket timeout."""
        timeout = float(self.options.get("socket_timeout", CLIENT_DEFAULTS["socket_timeout"]))
        return max(0.05, min(5.0, timeout / 2))


def parse_url(url: str) -> RedisSettings:
    """Read a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL.

    ``?prefix=`` names the key prefix (default ``offload``); ``?strict=1`` makes ``open``
    refuse a server that may lose acknowledged jobs; ``?max_connections=`` (default 64)
    and ``?pool_timeout=`` (seconds, default 30) size the connection pool, whose callers
    wait for a free connection rather than fail; ``?scripts=eval`` runs the scripts by
    EVALSHA even where Redis Functions are available (``functions`` insists on them;
    ``auto``, the default, picks at ``open``); the other query parameters are
    redis-py's (``socket_timeout``, ``ssl_cert_reqs``, ...). A Sentinel URL is
    ``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in OWN_PARAMS]
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"Bad key prefix {prefix!r} in {redact_url(url)!r}: use a non-empty prefix "
            "without braces (braces would change the Redis Cluster hash tags)."
        )
    strict = _flag(url, "strict", own.get("strict", "0"))
    try:
        max_connections = int(own.get("max_connections", POOL_SIZE))
        pool_timeout_s = float(own.get("pool_timeout", POOL_TIMEOUT_S))
    except ValueError:
        raise ConfigurationError(
            f"Bad max_connections or pool_timeout in {redact_url(url)!r}: use numbers, "
            "e.g. ?max_connections=64&pool_timeout=30."
        ) from None
    scripts = own.get("scripts", "auto")
    if scripts not in SCRIPT_MODES:
        raise ConfigurationError(
            f"Bad scripts={scripts!r} in {redact_url(url)!r}: use scripts=auto (the "
            "default), scripts=functions or scripts=eval."
        )
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    if parts.scheme == "redis+sentinel":
        settings = _sentinel_settings(url, parts.netloc, parts.path, prefix, dict(rest))
    else:
        _check_db(url, parts.path)
        settings = RedisSettings(url=url, prefix=prefix, client_url=client_url, options=dict(rest))
    return replace(
        settings,
        strict=strict,
        max_connections=max_connections,
        pool_timeout_s=pool_timeout_s,
        scripts=scripts,
    )


def _flag(url: str, name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no", ""):
        return False
    raise ConfigurationError(
        f"Bad {name}={raw!r} in {redact_url(url)!r}: use {name}=1 or {name}=0."
    )


def _check_db(url: str, path: str) -> int:
    db = path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigurationError(
            f"Bad Redis URL {redact_url(url)!r}: the path must be a database number, "
            "as in redis://localhost:6379/0."
        )
    return int(db)


def _sentinel_settings(
    url: str, netloc: str, path: str, prefix: str, options: dict[str, str]
) -> RedisSettings:
    creds, _, hosts = netloc.rpartition("@")
    user, _, password = creds.partition(":")
    service, _, db = path.strip("/").partition("/")
    sentinels = []
    for hostport in filter(None, hosts.split(",")):
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "26379")
        if not port.isdigit():
            raise ConfigurationError(f"Bad Sentinel address {hostport!r} in {redact_url(url)!r}.")
        sentinels.append((host, int(port)))
    if not sentinels or not service:
        raise ConfigurationError(
            f"Bad Sentinel URL {redact_url(url)!r}: write "
            "redis+sentinel://host:26379[,host2:26379]/service_name[/db]."
        )
    return RedisSettings(
        url=url,
        prefix=prefix,
        client_url="",
        sentinels=sentinels,
        service=service,
        db=_check_db(url, db),
        password=unquote(password) or None,
        username=unquote(user) or None,
        options=options,
    )


def make_client(settings: RedisSettings) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """A redis-py asyncio client that fails fast and reconnects on the next call, and
    the Sentinel clients behind it (to close with it).

    One retry (after a short backoff) covers a pooled connection that died with a
    server restart; beyond that the error surfaces as ``BrokerUnavailable`` and the
    caller (the worker) backs off. A retried script may have run once already; every
    script is safe under that (at-least-once: a lost claim reply is recovered after its
    lease, a repeated enqueue reports ``duplicate``).
    """
    kwargs: dict[str, Any] = dict(CLIENT_DEFAULTS)
    kwargs["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1)
    kwargs["retry_on_error"] = [rex.ConnectionError, rex.TimeoutError]
    if not settings.sentinels:
        try:
            # A blocking pool: past max_connections a call waits for a free connection
            # (up to pool_timeout) instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.client_url,
                max_connections=settings.max_connections,
                timeout=settings.pool_timeout_s,
                **kwargs,
            )
            return aioredis.Redis.from_pool(pool), []  # the client owns and closes the pool
        except ValueError as exc:
            raise ConfigurationError(
                f"Bad Redis URL {redact_url(settings.url)!r}: {exc}. "
                "Write redis://[:password@]host:6379/0 (rediss:// for TLS)."
            ) from exc
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key in settings.options:
            kwargs[key] = float(settings.options[key])
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinels,
        sentinel_kwargs={
            "password": settings.options.get("sentinel_password"),
            "socket_timeout": kwargs["socket_connect_timeout"],
        },
        **kwargs,
    )
    master: aioredis.Redis = sentinel.master_for(
        settings.service, db=settings.db, password=settings.password, username=settings.username
    )
    return master, list(sentinel.sentinels)


# --------------------------------------------------------------------------- errors

_TRANSIENT_REPLIES = ("BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY")


class Boundary:
    """Maps redis-py errors to offload's at the broker's edge (``with boundary:``)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.where = redact_url(url)
        self.prefix = prefix

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, (rex.RedisError, OSError)) and not isinstance(exc, BrokerError):
            raise self.translate(exc) from exc

    def translate(self, exc: BaseException) -> BrokerError:
        """The offload error for a driver error, with a message that says what to do."""
        text = str(exc) or type(exc).__name__
        if isinstance(exc, rex.OutOfMemoryError):
            # Transient for the worker (it backs off and resumes once memory frees), and a
            # typed, loud refusal for a producer: the write was refused whole.
            return BrokerUnavailable(
                f"Redis at {self.where} is out of memory (maxmemory reached with "
                "maxmemory-policy noeviction) and refused the write; nothing was stored. "
                "Raise maxmemory, bound queues with max_depth, or shorten result TTLs so "
                "pruning frees space."
            )
        if isinstance(exc, (rex.AuthenticationError, rex.AuthorizationError)):
            return BrokerError(
                f"Redis at {self.where} refused the credentials ({text}): check the user "
                "and password in the broker URL."
            )
        if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, OSError)) or (
            isinstance(exc, rex.ResponseError) and text.startswith(_TRANSIENT_REPLIES)
        ):
            return BrokerUnavailable(
                f"Redis at {self.where} is unavailable ({text}). Check that the server is "
                "running and reachable; offload reconnects on the next call."
            )
        if text.startswith("WRONGTYPE"):
            return BrokerError(
                f"Redis at {self.where} holds a key of an unexpected type under the prefix "
                f"{self.prefix!r}: another program writes there. Give offload its own "
                "prefix (?prefix=...) or database."
            )
        return BrokerError(f"Redis at {self.where} failed: {text}")


# --------------------------------------------------------------------------- keys


def tag_of(name: str) -> str:
    """The hash tag of a queue or topic: the part after its last ``@`` (the topic of a
    ``group@topic`` queue), or the whole name. Must match ``tag_of`` in lib.lua."""
    return name.rpartition("@")[2] or name


class Keys:
    """Key names (the layout is drawn in lib.lua)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queues = f"{prefix}:queues"
        self.topics = f"{prefix}:topics"
        self.workers_info = f"{prefix}:{{workers}}:info"
        self.workers_exp = f"{prefix}:{{workers}}:exp"
        self._bases: dict[str, str] = {}

    def queue(self, queue: str) -> str:
        """The base ``Q`` of a queue's keys (cached: it is on every hot path)."""
        base = self._bases.get(queue)
        if base is None:
            size = len(queue.encode())
            base = self._bases[queue] = f"{self.prefix}:{{{tag_of(queue)}}}:q:{size}:{queue}:"
        return base

    def notice(self, queue: str, job_id: str) -> str:
        return f"{self.prefix}:{{{tag_of(queue)}}}:n:{job_id}"

    def index(self, job_id: str) -> str:
        return f"{self.prefix}:id:{job_id}"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}:{{{tag_of(topic)}}}:t:{len(topic.encode())}:{topic}:"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def bucket(self, name: str) -> str:
        return f"{self.prefix}:bucket:{name}"

    def kv(self, key: str) -> str:
        return f"{self.prefix}:kv:{key}"


def _flags(body: str) -> str:
    """A script's Functions flags (its ``-- Flags:`` line) as a Lua list."""
    found = re.search(r"^-- Flags: ([a-z-]+)", body, re.MULTILINE)
    return f"'{found[1]}'" if found else ""


class Scripts:
    """The scripts of ``redis_lua/``, run one of two ways.

    Each script file is the body of a ``function(KEYS, ARGV)`` wrapped by ``script()`` of
    lib.lua. ``functions``: every script is a function of one Redis Functions library
    (Redis >= 7.0), so lib.lua runs once per server, not per call; the library's name,
    ``offload_<hash of its code>``, keeps two offload versions on one server apart.
    ``eval`` (Redis 6.2): each script with lib.lua prepended, run by SHA (EVALSHA).
    """

    def __init__(self) -> None:
        folder = importlib.resources.files("offload.brokers") / "redis_lua"
        lib = (folder / "lib.lua").read_text(encoding="utf-8")
        wrapped = {
            name: f"script(function(KEYS, ARGV)\n{(folder / f'{name}.lua').read_text('utf-8')}end)"
            for name in SCRIPTS
        }
        digest = hashlib.sha1(lib.encode() + "".join(wrapped.values()).encode()).hexdigest()
        self.library = f"offload_{digest[:16]}"
        registrations = [
            f"redis.register_function{{function_name = '{self.library}_{name}', "
            f"callback = {body}, flags = {{{_flags(body)}}}}}"
            for name, body in wrapped.items()
        ]
        self.library_code = "\n".join([f"#!lua name={self.library}", lib, *registrations])
        self.eval_code = {
            name: f"{lib}\nreturn {body}(KEYS, ARGV)" for name, body in wrapped.items()
        }
        self.sha = {
            name: hashlib.sha1(code.encode()).hexdigest() for name, code in self.eval_code.items()
        }
        self.functions = False  # set by the broker's open()

    @property
    def mode(self) -> str:
        return "functions" if self.functions else "eval"

    def call(self, name: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The command that runs script ``name``."""
        if self.functions:
            return ("FCALL", f"{self.library}_{name}", len(keys), *keys, *args)
        return ("EVALSHA", self.sha[name], len(keys), *keys, *args)

    def load(self, name: str) -> tuple[Any, ...]:
        """The command that (re)loads script ``name`` into the server."""
        if self.functions:
            return ("FUNCTION", "LOAD", "REPLACE", self.library_code)
        return ("SCRIPT", "LOAD", self.eval_code[name])

    @staticmethod
    def missing(reply: object) -> bool:
        """True if the reply says the server lacks the script (flushed or restarted)."""
        return isinstance(reply, rex.NoScriptError) or (
            isinstance(reply, rex.ResponseError) and str(reply).startswith("Function not found")
        )
