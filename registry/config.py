"""The registry's configuration schema: Distribution's ``config.yml`` as frozen dataclasses.

Every section a Distribution 2.x/3.x ``config.yml`` may hold is accepted, so an existing
file loads unchanged; sections portside does not implement are kept as plain data and
reported by ``unsupported_settings`` so start-up can warn. Adding a storage driver is one
dataclass plus one ``variant()`` line in ``StorageConfig``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from registry.config_gc import GarbageCollectionConfig
from registry.config_health import HealthConfig
from registry.config_notifications import NotificationsConfig
from registry.config_proxy import ProxyConfig
from registry.config_retention import RetentionConfig
from registry.config_support import IMPLEMENTED, unsupported_settings
from registry.config_ui import UiConfig
from registry.storage.s3_settings import MIB, S3_MAX_PART, S3_MIN_PART, S3DriverConfig
from shared import config as _config
from shared.ciphersuites import check_names
from shared.config import VARIANT, ConfigError, InvalidSetting, OneOf, between, meta
from shared.listener import listen_host_port
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

__all__ = [
    "IMPLEMENTED",
    "MIB",
    "S3_MAX_PART",
    "S3_MIN_PART",
    "ConfigError",
    "RedisConfig",
    "RegistryConfig",
    "S3DriverConfig",
    "between",
    "listen_host_port",
    "load_config",
    "unsupported_settings",
]

ENV_PREFIX = "REGISTRY"


def _choice(*allowed: str, lower: bool = False) -> Callable[[Any], Any]:
    def check(value: str) -> str:
        value = value.lower() if lower else value
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(a or '""' for a in allowed))
        return value

    return check


_LOG_LEVEL = _choice("", "error", "warn", "info", "debug", lower=True)


def _version(value: str) -> str:
    if value != "0.1":
        raise ValueError("unsupported version; this registry reads version 0.1")
    return value


def _absolute_url(value: str) -> str:
    if value:
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("expected an absolute http:// or https:// URL")
    return value


def _regexes(value: list[str]) -> list[str]:
    for i, pattern in enumerate(value):
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"item {i} is not a valid regular expression: {e.msg}") from None
    return value


def _require(section: object, *keys: str) -> None:
    for key in keys:
        if not getattr(section, key):
            raise InvalidSetting(key, "must be set")


# --- log ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessLogConfig:
    disabled: bool = False


@dataclass(frozen=True)
class LogConfig:
    level: str = field(
        default="", metadata=meta(check=_LOG_LEVEL)
    )  # "" until RegistryConfig resolves it
    formatter: str = field(default="text", metadata=meta(check=_choice("text", "json", "logstash")))
    fields: dict[str, Any] = field(default_factory=dict)
    accesslog: AccessLogConfig = field(default_factory=AccessLogConfig)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    reportcaller: bool = False


# --- storage -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FilesystemDriverConfig:
    rootdirectory: str = "/var/lib/registry"
    maxthreads: int = 100
    # portside's own key (Distribution has none): flush before acknowledging a write.
    fsync: bool = True


@dataclass(frozen=True)
class InMemoryDriverConfig:
    """The in-memory driver takes no parameters."""


@dataclass(frozen=True)
class DeleteConfig:
    enabled: bool = False


@dataclass(frozen=True)
class UploadPurgingConfig:
    enabled: bool = True
    age: datetime.timedelta = datetime.timedelta(hours=168)
    interval: datetime.timedelta = datetime.timedelta(hours=24)
    dryrun: bool = False

    def __post_init__(self) -> None:
        if self.enabled and self.interval <= datetime.timedelta(0):
            raise InvalidSetting("interval", "must be positive when upload purging is enabled")


@dataclass(frozen=True)
class ReadOnlyConfig:
    enabled: bool = False


@dataclass(frozen=True)
class MaintenanceConfig:
    uploadpurging: UploadPurgingConfig = field(default_factory=UploadPurgingConfig)
    readonly: ReadOnlyConfig = field(default_factory=ReadOnlyConfig)


_CACHE_KIND = _choice("", "inmemory", "redis")


@dataclass(frozen=True)
class CacheConfig:
    blobdescriptor: str = field(default="", metadata=meta(check=_CACHE_KIND))
    blobdescriptorsize: int = 10000
    layerinfo: str = field(
        default="", metadata=meta(check=_CACHE_KIND)
    )  # deprecated name of blobdescriptor

    @property
    def blob_descriptor_cache(self) -> str:
        """ "", "inmemory" or "redis", honouring the deprecated ``layerinfo``."""
        return self.blobdescriptor or self.layerinfo


@dataclass(frozen=True)
class RedirectConfig:
    disable: bool = False
    # portside: redirecting clients to the storage backend is opt-in (Distribution
    # redirects unless disabled), so a client that cannot reach the bucket still pulls.
    enabled: bool = False

    @property
    def active(self) -> bool:
        """Send clients to the driver's URLs (presigned S3 URLs) instead of streaming."""
        return self.enabled and not self.disable


@dataclass(frozen=True)
class TagConfig:
    concurrencylimit: int = 0


@dataclass(frozen=True)
class StorageConfig(OneOf):
    """Exactly one driver (filesystem when none is given) plus the non-driver keys."""

    DEFAULT_VARIANT: ClassVar[str | None] = "filesystem"
    VARIANT_KIND: ClassVar[str] = "storage driver"

    filesystem: FilesystemDriverConfig | None = field(default=None, metadata=VARIANT)
    inmemory: InMemoryDriverConfig | None = field(default=None, metadata=VARIANT)
    s3: S3DriverConfig | None = field(default=None, metadata=VARIANT)
    # Accepted so that existing files load; not implemented (unsupported_settings says so).
    azure: dict[str, Any] | None = field(default=None, metadata=VARIANT)
    gcs: dict[str, Any] | None = field(default=None, metadata=VARIANT)
    swift: dict[str, Any] | None = field(default=None, metadata=VARIANT)
    oss: dict[str, Any] | None = field(default=None, metadata=VARIANT)

    delete: DeleteConfig = field(default_factory=DeleteConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    redirect: RedirectConfig = field(default_factory=RedirectConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    gc: GarbageCollectionConfig = field(default_factory=GarbageCollectionConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.s3 is not None and not self.s3.bucket:
            raise InvalidSetting("s3", "bucket must be set")

    @property
    def driver_name(self) -> str:
        """The configured driver's key: "filesystem", "inmemory", ..."""
        return self.variant_name or "filesystem"


# --- http --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LetsEncryptConfig:
    cachefile: str = ""
    email: str = ""
    hosts: list[str] = field(default_factory=list)
    directoryurl: str = ""


@dataclass(frozen=True)
class TLSConfig:
    certificate: str = ""
    key: str = ""
    clientcas: list[str] = field(default_factory=list)
    clientauth: str = field(
        default="",
        metadata=meta(
            check=_choice(
                "",
                "request-client-cert",
                "require-any-client-cert",
                "verify-client-cert-if-given",
                "require-and-verify-client-cert",
            )
        ),
    )
    minimumtls: str = field(
        default="", metadata=meta(check=_choice("", "tls1.0", "tls1.1", "tls1.2", "tls1.3"))
    )
    ciphersuites: list[str] = field(default_factory=list, metadata=meta(check=check_names))
    letsencrypt: LetsEncryptConfig = field(default_factory=LetsEncryptConfig)

    def __post_init__(self) -> None:
        if self.certificate and not self.key:
            raise InvalidSetting("key", "must be set when certificate is")
        if self.key and not self.certificate:
            raise InvalidSetting("certificate", "must be set when key is")


@dataclass(frozen=True)
class PrometheusConfig:
    """Serve the metrics on ``http.debug.addr`` (registry.metrics_serving)."""

    enabled: bool = False
    path: str = field(default="/metrics", metadata=meta(check=metrics_path))


@dataclass(frozen=True)
class DebugConfig:
    addr: str = ""
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)


@dataclass(frozen=True)
class HTTP2Config:
    disabled: bool = False


@dataclass(frozen=True)
class H2CConfig:
    enabled: bool = False


@dataclass(frozen=True)
class HTTPConfig:
    addr: str = ":5000"
    net: str = field(
        default="tcp", metadata=meta(check=lambda v: _choice("", "tcp", "unix")(v) or "tcp")
    )
    host: str = field(default="", metadata=meta(check=_absolute_url))
    prefix: str = ""
    secret: str = ""
    relativeurls: bool = False
    draintimeout: datetime.timedelta = datetime.timedelta(0)
    # portside's: Distribution has no keys for Go's ReadHeaderTimeout and IdleTimeout,
    # nor for a pause inside a request body (see shared.serving).
    readheadertimeout: datetime.timedelta = field(
        default=DEFAULT_READ_HEADER_TIMEOUT, metadata=meta(check=positive_duration)
    )
    idletimeout: datetime.timedelta = field(
        default=DEFAULT_IDLE_TIMEOUT, metadata=meta(check=positive_duration)
    )
    bodytimeout: datetime.timedelta = field(
        default=DEFAULT_BODY_TIMEOUT, metadata=meta(check=positive_duration)
    )
    headers: dict[str, list[str]] = field(default_factory=dict)
    # portside's (Distribution has none): proxies whose Forwarded / X-Forwarded-For is
    # believed (shared.client_address); an address or CIDR each.
    trustedproxies: list[str] = field(default_factory=list, metadata=meta(check=check_networks))
    tls: TLSConfig = field(default_factory=TLSConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    http2: HTTP2Config = field(default_factory=HTTP2Config)
    h2c: H2CConfig = field(default_factory=H2CConfig)

    def __post_init__(self) -> None:
        if self.net == "tcp":
            try:
                listen_host_port(self.addr)
            except ValueError as e:
                raise InvalidSetting("addr", str(e)) from None
        elif not self.addr:
            raise InvalidSetting("addr", "must be the socket's path when net is unix")


# --- auth --------------------------------------------------------------------------------

TOKEN_SIGNING_ALGORITHMS = (
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
)


@dataclass(frozen=True)
class HtpasswdAuthConfig:
    realm: str = ""
    path: str = ""
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)  # portside's own

    def __post_init__(self) -> None:
        _require(self, "realm", "path")


@dataclass(frozen=True)
class TokenAuthConfig:
    realm: str = ""
    service: str = ""
    issuer: str = ""
    rootcertbundle: str = ""
    jwks: str = ""
    signingalgorithms: list[str] = field(default_factory=list)  # empty: all of them
    autoredirect: bool = False
    autoredirectpath: str = "/auth/token/"

    def __post_init__(self) -> None:
        _require(self, "realm", "service", "issuer")
        if not (self.rootcertbundle or self.jwks):
            raise InvalidSetting("rootcertbundle", "rootcertbundle or jwks must be set")
        unknown = [a for a in self.signingalgorithms if a not in TOKEN_SIGNING_ALGORITHMS]
        if unknown:
            raise InvalidSetting(
                "signingalgorithms", "expected names from " + ", ".join(TOKEN_SIGNING_ALGORITHMS)
            )


@dataclass(frozen=True)
class SillyAuthConfig:
    realm: str = ""
    service: str = ""

    def __post_init__(self) -> None:
        _require(self, "realm", "service")


@dataclass(frozen=True)
class AuthConfig(OneOf):
    """At most one access controller; none means every request is allowed."""

    VARIANT_KIND: ClassVar[str] = "auth method"

    htpasswd: HtpasswdAuthConfig | None = field(default=None, metadata=VARIANT)
    token: TokenAuthConfig | None = field(default=None, metadata=VARIANT)
    silly: SillyAuthConfig | None = field(default=None, metadata=VARIANT)

    @property
    def method_name(self) -> str | None:
        """ "htpasswd", "token", "silly" or None."""
        return self.variant_name


# --- validation, catalog -----------------------------------------------------------------


@dataclass(frozen=True)
class URLRulesConfig:
    allow: list[str] = field(default_factory=list, metadata=meta(check=_regexes))
    deny: list[str] = field(default_factory=list, metadata=meta(check=_regexes))


@dataclass(frozen=True)
class PlatformConfig:
    architecture: str = ""
    os: str = ""


@dataclass(frozen=True)
class IndexValidationConfig:
    platforms: str = field(
        default="all",
        metadata=meta(check=lambda v: _choice("", "all", "none", "list", lower=True)(v) or "all"),
    )
    platformlist: list[PlatformConfig] = field(default_factory=list)


@dataclass(frozen=True)
class ManifestValidationConfig:
    urls: URLRulesConfig = field(default_factory=URLRulesConfig)
    indexes: IndexValidationConfig = field(default_factory=IndexValidationConfig)


@dataclass(frozen=True)
class ValidationConfig:
    enabled: bool = False  # deprecated in favour of disabled
    disabled: bool = False
    manifests: ManifestValidationConfig = field(default_factory=ManifestValidationConfig)


@dataclass(frozen=True)
class CatalogConfig:
    # Distribution: zero or negative means the default, 1000.
    maxentries: int = field(default=1000, metadata=meta(check=lambda v: v if v > 0 else 1000))


# --- the whole file ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryConfig:
    version: str = field(default="0.1", metadata=meta(check=_version))
    log: LogConfig = field(default_factory=LogConfig)
    loglevel: str = field(default="", metadata=meta(check=_LOG_LEVEL))  # deprecated: log.level
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    ui: UiConfig = field(default_factory=UiConfig)  # portside's own: the web interface
    # Accepted as plain data so existing files load; not implemented.
    compatibility: dict[str, Any] = field(default_factory=dict)
    middleware: dict[str, Any] = field(default_factory=dict)
    reporting: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.log.level:
            # As Distribution: log.level, else the deprecated loglevel, else info.
            level = self.loglevel or "info"
            object.__setattr__(self, "log", dataclasses.replace(self.log, level=level))
        if self.storage.cache.blob_descriptor_cache == "redis" and not self.redis.configured:
            raise InvalidSetting(
                "redis", "addr (or addrs) must be set for storage.cache.blobdescriptor: redis"
            )


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> RegistryConfig:
    """Read a Distribution-style ``config.yml`` (None: all defaults) and apply the
    ``REGISTRY_*`` variables of ``environ``; raises ConfigError naming the key."""
    return _config.load_config(RegistryConfig, path, environ, ENV_PREFIX)
