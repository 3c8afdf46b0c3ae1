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
from shared.config import ConfigError, InvalidSetting, meta
from shared.listener import listen_host_port
from shared.log_format import FORMATTERS
from shared.metrics import metrics_path
from shared.networks import check_networks
from shared.ratelimit import RateLimitConfig
from shared.redis_config import RedisConfig
from shared.timeouts import (
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


def _debug_addr(value: str) -> str:
    if value:
        try:
            split_address(value)
        except ConfigError:
            raise ValueError("expected host:port or :port") from None
    return value


@dataclass(frozen=True)
class PrometheusConfig:
    enabled: bool = False
    path: str = field(default="/metrics", metadata=meta(check=metrics_path))


@dataclass(frozen=True)
class DebugConfig:
    """A listener apart from the token endpoint, as the registry's ``http.debug``: the
    token endpoint faces every client, the metrics only the operator's tools."""

    addr: str = field(default="", metadata=meta(check=_debug_addr))
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)


@dataclass(frozen=True)
class HTTPConfig:
    addr: str = ":5001"
    path: str = field(default="/auth", metadata=meta(check=_path))
    realm: str = "portside"  # the realm of the Basic challenge on bad credentials
    tls: TLSConfig = field(default_factory=TLSConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
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
    # Instead of key and certificate: a directory of rotating keys (tokenauth.keydir),
    # watched and re-read when ``tokenauth keygen --dir DIR --rotate`` changes it.
    keydir: str = ""
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
        if self.keydir and (self.key or self.certificate):
            raise InvalidSetting("keydir", "set either keydir or key and certificate, not both")


@dataclass(frozen=True)
class CredentialCacheConfig:
    """How long a verified user+password is remembered (as an HMAC) to skip bcrypt."""

    ttl: timedelta = timedelta(seconds=60)
    maxentries: int = field(default=10_000, metadata=meta(check=_positive))


def _tls_mode(value: str) -> str:
    if value not in ("none", "starttls", "always"):
        raise ValueError("expected none, starttls or always")
    return value


@dataclass(frozen=True)
class LdapConfig:
    """An LDAP directory as an authenticator (docker_auth's ``ldap_auth``, keys without
    underscores): bind as the service account, find the user with ``filter``, bind as the
    user to check the password, read the groups."""

    addr: str = ""  # host:port
    tls: str = field(default="none", metadata=meta(check=_tls_mode))
    cacertificate: str = ""  # PEM CA bundle for always/starttls; empty: the system's
    insecuretlsskipverify: bool = False
    binddn: str = ""  # the service account; empty: anonymous search
    bindpasswordfile: str = ""  # its password, in a file (never in the config itself)
    base: str = ""
    filter: str = "(uid=${account})"  # ${account} is escaped (RFC 4515) before use
    groupattribute: str = "memberOf"  # on the user entry, DN values: the RDN is the name
    groupbase: str = ""  # set with groupfilter to search groups instead of memberOf
    groupfilter: str = ""  # e.g. (member=${dn}) or (memberUid=${account})
    groupnameattribute: str = "cn"
    timeout: timedelta = field(default=timedelta(seconds=5), metadata=meta(check=positive_duration))
    poolsize: int = field(default=4, metadata=meta(check=_positive))

    def __post_init__(self) -> None:
        if not self.addr:
            raise InvalidSetting("addr", "must be set (host:port)")
        if not self.base:
            raise InvalidSetting("base", "must be set")
        if "${account}" not in self.filter:
            raise InvalidSetting("filter", "must contain ${account}")
        if bool(self.groupbase) != bool(self.groupfilter):
            raise InvalidSetting("groupfilter", "groupbase and groupfilter go together")
        if bool(self.binddn) != bool(self.bindpasswordfile):
            raise InvalidSetting("bindpasswordfile", "binddn and bindpasswordfile go together")


@dataclass(frozen=True)
class ExternalConfig:
    """A program asked on each login (``extauth``) or scope (``extauthz``), docker_auth's
    ``ext_auth``/``ext_authz`` contract (docs/tokenauth.md)."""

    command: str = ""
    args: list[str] = field(default_factory=list)
    timeout: timedelta = field(default=timedelta(seconds=5), metadata=meta(check=positive_duration))
    concurrency: int = field(default=4, metadata=meta(check=_positive))

    def __post_init__(self) -> None:
        if not self.command:
            raise InvalidSetting("command", "must be set")


AUTHENTICATORS = ("robots", "users", "ldap", "extauth")  # the default order of the chain
AUTHORIZERS = ("acl", "extauthz")


@dataclass(frozen=True)
class TokenAuthConfig:
    http: HTTPConfig = field(default_factory=HTTPConfig)
    token: TokenConfig = field(default_factory=TokenConfig)
    users: list[str] = field(default_factory=list)  # htpasswd files, searched in order
    acl: str = ""  # the ACL file; none: every token carries no access
    ldap: LdapConfig | None = None
    extauth: ExternalConfig | None = None
    extauthz: ExternalConfig | None = None
    robots: str = ""  # the robot accounts file (tokenauth robot create writes it)
    # The order of the chains; empty: every configured one, in AUTHENTICATORS/AUTHORIZERS order.
    authn: list[str] = field(default_factory=list)
    authz: list[str] = field(default_factory=list)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    credentialcache: CredentialCacheConfig = field(default_factory=CredentialCacheConfig)
    # Distribution's ``redis`` section, as the registries have it: when set, the login
    # buckets live there, shared by every replica (shared.ratelimit_redis).
    redis: RedisConfig = field(default_factory=RedisConfig)
    loglevel: str = field(default="info", metadata=meta(check=_loglevel))
    log: LogConfig = field(default_factory=LogConfig)


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> TokenAuthConfig:
    """Load ``path`` with ``TOKENAUTH_*`` overrides and resolve its relative file paths."""
    config = _config.load_config(TokenAuthConfig, path, environ, ENV_PREFIX)
    for key in ("issuer", "services"):
        if not getattr(config.token, key):
            raise ConfigError(f"token.{key}: must be set")
    if not config.token.key and not config.token.keydir:
        raise ConfigError("token.key: must be set (or token.keydir)")
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
        token,
        key=resolve(token.key),
        certificate=resolve(token.certificate),
        keydir=resolve(token.keydir),
    )
    ldap = config.ldap
    if ldap is not None:
        ldap = dataclasses.replace(
            ldap,
            cacertificate=resolve(ldap.cacertificate),
            bindpasswordfile=resolve(ldap.bindpasswordfile),
        )
    config = dataclasses.replace(
        config,
        http=dataclasses.replace(config.http, tls=tls),
        token=token,
        users=[resolve(p) for p in config.users],
        acl=resolve(config.acl),
        robots=resolve(config.robots),
        ldap=ldap,
    )
    _check_chains(config)
    return config


def configured(config: TokenAuthConfig, name: str) -> bool:
    """Whether the authenticator or authorizer ``name`` is configured."""
    value = getattr(config, name)
    return bool(value) if name != "users" else bool(config.users) or not config.authn


def authenticator_order(config: TokenAuthConfig) -> list[str]:
    """The authenticators, in the order the chain asks them."""
    if config.authn:
        return list(config.authn)
    return [name for name in AUTHENTICATORS if configured(config, name)]


def authorizer_order(config: TokenAuthConfig) -> list[str]:
    if config.authz:
        return list(config.authz)
    return [name for name in AUTHORIZERS if configured(config, name)]


def _check_chains(config: TokenAuthConfig) -> None:
    for key, names, known in (
        ("authn", config.authn, AUTHENTICATORS),
        ("authz", config.authz, AUTHORIZERS),
    ):
        for name in names:
            if name not in known:
                raise ConfigError(f"{key}: unknown {name!r}; expected some of {list(known)}")
            if not configured(config, name) or names.count(name) > 1:
                raise ConfigError(f"{key}: {name!r} is not configured, or named twice")


def split_address(addr: str) -> tuple[str | None, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) → (host, port)."""
    try:
        host, port = listen_host_port(addr)
    except ValueError as error:
        raise ConfigError(f"http.addr: {error}, not {addr!r}") from None
    return host or None, port
