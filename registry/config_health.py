"""Configuration of health checks (``health``), in Distribution's shape and defaults.

``storagedriver`` checks the configured storage, ``file``/``http``/``tcp`` are lists of
checks of other things; ``redis`` is portside's own (Distribution has no Redis check).
A zero ``interval`` means Distribution's default, 10 s; a zero ``threshold`` means one
failure is enough. Kept apart from ``registry.config``, which imports it into the schema.
"""

from __future__ import annotations

import datetime
import urllib.parse
from dataclasses import dataclass, field

from shared.config import InvalidSetting, between, meta
from shared.redis_config import listen_host_port

DEFAULT_INTERVAL = datetime.timedelta(seconds=10)
_ZERO = datetime.timedelta(0)


def _not_negative(value: datetime.timedelta) -> datetime.timedelta:
    if value < _ZERO:
        raise ValueError("must not be negative")
    return value


_THRESHOLD = meta(check=between(0, 1_000_000))
_DURATION = meta(check=_not_negative)


def interval_or_default(value: datetime.timedelta) -> float:
    """Seconds between two runs of a check: Distribution's 10 s when unset (zero)."""
    return (value or DEFAULT_INTERVAL).total_seconds()


@dataclass(frozen=True)
class StorageDriverHealthConfig:
    enabled: bool = False
    interval: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)
    threshold: int = field(default=0, metadata=_THRESHOLD)


@dataclass(frozen=True)
class RedisHealthConfig:
    """portside's: the Redis check runs whenever ``redis`` is configured, unless disabled."""

    disabled: bool = False
    interval: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)
    threshold: int = field(default=0, metadata=_THRESHOLD)


@dataclass(frozen=True)
class FileHealthConfig:
    file: str = ""
    interval: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)

    def __post_init__(self) -> None:
        if not self.file:
            raise InvalidSetting("file", "must be set")


def _http_uri(value: str) -> str:
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("expected an absolute http:// or https:// URL")
    return value


@dataclass(frozen=True)
class HTTPHealthConfig:
    uri: str = field(default="", metadata=meta(check=lambda v: v and _http_uri(v)))
    headers: dict[str, list[str]] = field(default_factory=dict)
    statuscode: int = field(default=0, metadata=meta(check=between(0, 599)))  # 0: 200
    timeout: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)
    interval: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)
    threshold: int = field(default=0, metadata=_THRESHOLD)

    def __post_init__(self) -> None:
        if not self.uri:
            raise InvalidSetting("uri", "must be set")


@dataclass(frozen=True)
class TCPHealthConfig:
    addr: str = ""
    timeout: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)
    interval: datetime.timedelta = field(default=_ZERO, metadata=_DURATION)
    threshold: int = field(default=0, metadata=_THRESHOLD)

    def __post_init__(self) -> None:
        if not self.addr:
            raise InvalidSetting("addr", "must be set")
        try:
            host, _ = listen_host_port(self.addr)
        except ValueError as e:
            raise InvalidSetting("addr", str(e)) from None
        if not host:
            raise InvalidSetting("addr", "expected HOST:PORT with a host to connect to")


@dataclass(frozen=True)
class HealthConfig:
    storagedriver: StorageDriverHealthConfig = field(default_factory=StorageDriverHealthConfig)
    redis: RedisHealthConfig = field(default_factory=RedisHealthConfig)
    file: list[FileHealthConfig] = field(default_factory=list)
    http: list[HTTPHealthConfig] = field(default_factory=list)
    tcp: list[TCPHealthConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Each check is named by what it checks, and a name answers for one check only
        # (Distribution refuses a name twice); "redis" and storagedriver_* are taken.
        names: set[str] = set()
        for key, name in (
            *(("file", c.file) for c in self.file),
            *(("http", public_uri(c.uri)) for c in self.http),
            *(("tcp", c.addr) for c in self.tcp),
        ):
            if name in names or name == "redis" or name.startswith("storagedriver_"):
                raise InvalidSetting(key, f"a second check would be named {name}")
            names.add(name)


def public_uri(uri: str) -> str:
    """``uri`` without user and password: how the health answer names an HTTP check."""
    url = urllib.parse.urlsplit(uri)
    if url.username is None and url.password is None:
        return uri
    netloc = url.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if url.port is not None:
        netloc += f":{url.port}"
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))
