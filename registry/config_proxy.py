"""Configuration of the pull-through cache (``proxy``), in Distribution's shape.

Distribution's single-upstream form is kept as it is: ``proxy.remoteurl`` (with
``username``, ``password``, ``ttl``) turns the whole registry into a mirror of one
upstream that refuses pushes. portside's own ``proxy.upstreams`` list mirrors several
upstreams, each under a namespace ``prefix`` of the local names, beside hosted
repositories that accept pushes. The two forms exclude each other. Kept apart from
``registry.config``, which imports it into the schema.
"""

from __future__ import annotations

import datetime
import urllib.parse
from dataclasses import dataclass, field

from shared.config import InvalidSetting, meta
from shared.reference import is_valid_name

# Distribution's default: cached content expires a week after it was last pulled.
DEFAULT_TTL = datetime.timedelta(hours=168)
_ZERO = datetime.timedelta(0)


def _remote_url(value: str) -> str:
    if value:
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("expected an absolute http:// or https:// URL")
        if url.username is not None or url.password is not None:
            raise ValueError("give credentials as username and password, not in the URL")
    return value.rstrip("/")


def _not_negative(value: datetime.timedelta) -> datetime.timedelta:
    if value < _ZERO:
        raise ValueError("must not be negative")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


# Blob downloads from upstreams at once, per registry process: each holds a few MiB of
# buffers (the upstream's read buffer, a batch being written, each client's share).
DEFAULT_MAX_DOWNLOADS = 16


def _prefix(value: str) -> str:
    value = value.strip("/")
    if value and not is_valid_name(value):
        raise ValueError("expected a repository name component such as dockerhub or ghcr/io")
    return value


@dataclass(frozen=True)
class ExecCredentialsConfig:
    """Distribution 3's credential helper; accepted so files load, not implemented."""

    command: str = ""
    lifetime: datetime.timedelta = _ZERO


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream: local names ``<prefix>/<name>`` are fetched as ``<name>`` from
    ``remoteurl`` (``library/<name>`` for a single name when ``library`` is set, as
    Docker Hub names its official images)."""

    prefix: str = field(default="", metadata=meta(check=_prefix))
    remoteurl: str = field(default="", metadata=meta(check=_remote_url))
    username: str = ""
    password: str = ""
    # A cached tag not pulled for this long is dropped (0: never).
    ttl: datetime.timedelta = field(default=DEFAULT_TTL, metadata=meta(check=_not_negative))
    # Upstream unreachable: serve what is cached (true) or answer 503 (false).
    servestale: bool = True
    library: bool = False
    # Seconds to wait for the upstream to connect or send the next bytes.
    timeout: datetime.timedelta = field(
        default=datetime.timedelta(seconds=30), metadata=meta(check=_not_negative)
    )

    def __post_init__(self) -> None:
        if not self.remoteurl:
            raise InvalidSetting("remoteurl", "must be set")
        if self.password and not self.username:
            raise InvalidSetting("username", "must be set when password is")


@dataclass(frozen=True)
class ProxyConfig:
    remoteurl: str = field(default="", metadata=meta(check=_remote_url))
    username: str = ""
    password: str = ""
    ttl: datetime.timedelta = field(default=DEFAULT_TTL, metadata=meta(check=_not_negative))
    exec: ExecCredentialsConfig = field(default_factory=ExecCredentialsConfig)
    remotenamespace: str = ""
    # portside's own keys.
    servestale: bool = True
    library: bool = False
    timeout: datetime.timedelta = field(
        default=datetime.timedelta(seconds=30), metadata=meta(check=_not_negative)
    )
    upstreams: list[UpstreamConfig] = field(default_factory=list)
    # Distinct blobs downloaded from the upstreams at once (per process, all upstreams
    # together); more wait their turn. Bounds the memory and connections cold pulls take.
    maxdownloads: int = field(default=DEFAULT_MAX_DOWNLOADS, metadata=meta(check=_positive))

    def __post_init__(self) -> None:
        if self.remoteurl and self.upstreams:
            raise InvalidSetting("upstreams", "give either remoteurl or upstreams, not both")
        prefixes: set[str] = set()
        for upstream in self.upstreams:
            if not upstream.prefix:
                raise InvalidSetting("upstreams", "every upstream needs a prefix")
            if upstream.prefix in prefixes:
                raise InvalidSetting("upstreams", f"prefix {upstream.prefix} is given twice")
            prefixes.add(upstream.prefix)

    @property
    def enabled(self) -> bool:
        return bool(self.remoteurl or self.upstreams)

    def all_upstreams(self) -> list[UpstreamConfig]:
        """Every upstream; the single-upstream form as one with the empty prefix."""
        if self.remoteurl:
            return [
                UpstreamConfig(
                    prefix="",
                    remoteurl=self.remoteurl,
                    username=self.username,
                    password=self.password,
                    ttl=self.ttl,
                    servestale=self.servestale,
                    library=self.library,
                    timeout=self.timeout,
                )
            ]
        return list(self.upstreams)
