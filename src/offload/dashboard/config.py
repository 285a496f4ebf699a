"""The dashboard's settings, and the bind rule: loopback, or authentication.

An unauthenticated dashboard is reachable only from this machine: it binds to
``127.0.0.1`` and accepts only loopback ``Host`` headers, so a web page elsewhere cannot
reach it through DNS rebinding either. Any other bind needs a token or basic auth.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from offload.errors import ConfigurationError

__all__ = ["LOOPBACK_HOSTS", "MIN_SECRET_LENGTH", "DashboardConfig", "check_bind", "is_loopback"]

#: Host names (without port) an unauthenticated dashboard answers to.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class DashboardConfig:
    """How the dashboard guards itself (see ``docs/dashboard.md``).

    Attributes:
        token: a bearer token; browsers log in once with it and get a session cookie.
        basic_auth: ``(user, password)`` for HTTP basic authentication.
        read_only: show everything, change nothing (every POST is refused).
        allowed_hosts: ``Host`` header names accepted (default: loopback names without
            authentication, any with it).
        allowed_origins: extra origins (``https://ops.example.com``) allowed to POST, for
            a dashboard behind a proxy that rewrites the host.
        secret: key for CSRF tokens and sessions; set it when several processes serve
            the same dashboard (default: derived from the token, else random).
        refresh_s: how often pages refresh their live parts.
    """

    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    read_only: bool = False
    allowed_hosts: frozenset[str] | None = None
    allowed_origins: frozenset[str] = frozenset()
    secret: str | None = None
    refresh_s: float = 2.0

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"The dashboard token must be at least {MIN_SECRET_LENGTH} characters; "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        if self.basic_auth is not None:
            user, password = self.basic_auth
            if not user or ":" in user or len(password) < MIN_SECRET_LENGTH:
                raise ConfigurationError(
                    "basic_auth needs a user name without ':' and a password of at least "
                    f"{MIN_SECRET_LENGTH} characters."
                )
        if not 0.5 <= self.refresh_s <= 300:
            raise ConfigurationError("refresh_s must be between 0.5 and 300 seconds.")

    @property
    def authenticated(self) -> bool:
        """True when requests must prove who they are."""
        return self.token is not None or self.basic_auth is not None

    def hosts(self) -> frozenset[str] | None:
        """Accepted ``Host`` names, or ``None`` for any."""
        if self.allowed_hosts is not None:
            return frozenset(h.lower() for h in self.allowed_hosts)
        return None if self.authenticated else LOOPBACK_HOSTS


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, config: DashboardConfig) -> None:
    """Refuse to serve an unauthenticated dashboard beyond this machine.

    Raises:
        ConfigurationError: ``host`` is not a loopback address and neither a token nor
            basic auth is configured.
    """
    if is_loopback(host) or config.authenticated:
        return
    raise ConfigurationError(
        f"Refusing to serve the dashboard on {host!r} without authentication: anyone who "
        "can reach it could read job arguments and requeue or delete jobs. Pass --token "
        "(or set OFFLOAD_DASHBOARD_TOKEN), or --basic-auth USER:PASSWORD, or bind to "
        "127.0.0.1."
    )
