"""tokenauth's configuration: a YAML file whose every key ``TOKENAUTH_<PATH>`` may override.

Relative file paths (users, ACL, signing key, TLS files) are resolved against the directory
of the configuration file, so a deployment directory can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from shared import config as _config
from shared.client_address import check_networks
from shared.config import ConfigError, InvalidSetting, meta
from shared.log_format import FORMATTERS
from shared.ratelimit import RateLimitConfig
from shared.serving import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_READ_HEADER_TIMEOUT,
    positive_duration,
)

__all__ = ["ConfigError", "TokenAuthConfig", "load_config", "split_address"]

ENV_PREFIX = "TOKENAUTH"
MIN_TOKEN_LIFETIME = timedelta(seconds=60)
MAX_TOKEN_LIFETIME = timedelta(hours=24)
REFRESH_AUDIENCE_PREFIX = "tokenauth-refresh:"


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _loglevel(value: str) -> str:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("expected one of debug, info, warning, error")
    return value.lower()


def _formatter(value: str) -> str:
    if value not in FORMATTERS:
        raise ValueError(f"expected one of {', '.join(FORMATTERS)}")
    return value


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path starting with '/'")
    return value


@dataclass(frozen=True)
class TLSConfig:
    """Serve HTTPS with this certificate chain and key (both PEM files); empty: plain HTTP."""

    certificate: str = ""
    key: str = ""
    minimumtls: str = ""  # tls1.0 to tls1.3; empty: tls1.2 (checked with the TLS setup)
    clientcas: list[str] = field(default_factory=list)  # mutual TLS: CAs of client certs

    def __post_init__(self) -> None:
        if bool(self.certificate) != bool(self.key):
            raise InvalidSetting("key" if self.certificate else "certificate", "must be set too")


@dataclass(frozen=True)
class HTTPConfig:
    addr: str = ":5001"
    path: str = field(default="/auth", metadata=meta(check=_path))
    realm: str = "portside"  # the realm of the Basic challenge on bad credentials
    tls: TLSConfig = field(default_factory=TLSConfig)
    # The registry's keys (see shared.serving): a request head must arrive within
    # readheadertimeout of its first byte; a connection idle this long is closed; a
    # request body may pause for at most bodytimeout.
    readheadertimeout: timedelta = field(
        default=DEFAULT_READ_HEADER_TIMEOUT, metadata=meta(check=positive_duration)
    )
    idletimeout: timedelta = field(
        default=DEFAULT_IDLE_TIMEOUT, metadata=meta(check=positive_duration)
    )
    bodytimeout: timedelta = field(
        default=DEFAULT_BODY_TIMEOUT, metadata=meta(check=positive_duration)
    )
    # Proxies whose Forwarded / X-Forwarded-For is believed (shared.client_address): the
    # client address then serves rate limits, ACL ip rules, audit and access lines.
    trustedproxies: list[str] = field(default_factory=list, metadata=meta(check=check_networks))


@dataclass(frozen=True)
class AccessLogConfig:
    disabled: bool = False


@dataclass(frozen=True)
class LogConfig:
    """The registry's log keys (level stays ``loglevel``): see shared.log_format."""

    formatter: str = field(default="text", metadata=meta(check=_formatter))
    fields: dict[str, Any] = field(default_factory=dict)
    accesslog: AccessLogConfig = field(default_factory=AccessLogConfig)


@dataclass(frozen=True)
class TokenConfig:
    issuer: str = ""
    services: list[str] = field(default_factory=list)
    key: str = ""  # PEM private key (tokenauth keygen writes one)
    certificate: str = ""  # PEM chain for x5c, leaf first; what registries' rootcertbundle trusts
    lifetime: timedelta = timedelta(minutes=5)
    refreshlifetime: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if not all(self.services):
            raise InvalidSetting("services", "a service name must not be empty")
        if any(s.startswith(REFRESH_AUDIENCE_PREFIX) for s in self.services):
            raise InvalidSetting("services", f"{REFRESH_AUDIENCE_PREFIX!r} names are reserved")
        if not MIN_TOKEN_LIFETIME <= self.lifetime <= MAX_TOKEN_LIFETIME:
            raise InvalidSetting("lifetime", "must be between 60s and 24h")
        if self.refreshlifetime < self.lifetime:
            raise InvalidSetting("refreshlifetime", "must not be shorter than lifetime")


@dataclass(frozen=True)
class CredentialCacheConfig:
    """How long a verified user+password is remembered (as an HMAC) to skip bcrypt."""

    ttl: timedelta = timedelta(seconds=60)
    maxentries: int = field(default=10_000, metadata=meta(check=_positive))


@dataclass(frozen=True)
class TokenAuthConfig:
    http: HTTPConfig = field(default_factory=HTTPConfig)
    token: TokenConfig = field(default_factory=TokenConfig)
    users: list[str] = field(default_factory=list)  # htpasswd files, searched in order
    acl: str = ""  # the ACL file; none: every token carries no access
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    credentialcache: CredentialCacheConfig = field(default_factory=CredentialCacheConfig)
    loglevel: str = field(default="info", metadata=meta(check=_loglevel))
    log: LogConfig = field(default_factory=LogConfig)


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> TokenAuthConfig:
    """Load ``path`` with ``TOKENAUTH_*`` overrides and resolve its relative file paths."""
    config = _config.load_config(TokenAuthConfig, path, environ, ENV_PREFIX)
    for key in ("issuer", "services", "key"):
        if not getattr(config.token, key):
            raise ConfigError(f"token.{key}: must be set")
    base = Path(path).parent if path is not None else Path.cwd()

    def resolve(value: str) -> str:
        return str(base / value) if value else value

    tls = config.http.tls
    tls = dataclasses.replace(
        tls,
        certificate=resolve(tls.certificate),
        key=resolve(tls.key),
        clientcas=[resolve(p) for p in tls.clientcas],
    )
    token = config.token
    token = dataclasses.replace(
        token, key=resolve(token.key), certificate=resolve(token.certificate)
    )
    return dataclasses.replace(
        config,
        http=dataclasses.replace(config.http, tls=tls),
        token=token,
        users=[resolve(p) for p in config.users],
        acl=resolve(config.acl),
    )


def split_address(addr: str) -> tuple[str | None, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"http.addr: expected host:port or :port, not {addr!r}")
    return (host.strip("[]") or None), int(port)
