"""Configuration of Redis: Distribution's ``redis`` section, which the registry (its
scale-out cache) and tokenauth (its login buckets, across replicas) read alike.

Kept apart from the services' configs (which import it into their schemas) because it is a
long list of Distribution's keys with checks of its own. (The S3 driver's keys live beside
the driver, in ``registry.storage.s3_settings``.) ``listen_host_port``, the Go-style
address parser both services use, is ``shared.listener``'s.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from shared.config import InvalidSetting, between, meta
from shared.listener import listen_host_port

# --- redis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTLSConfig:
    enabled: bool = False  # Distribution 2.8
    certificate: str = ""  # Distribution 3: a client certificate and its key
    key: str = ""
    clientcas: list[str] = field(default_factory=list)  # CA files that verify the server

    @property
    def active(self) -> bool:
        return self.enabled or bool(self.certificate or self.clientcas)


@dataclass(frozen=True)
class RedisPoolConfig:
    """Distribution 2.8's pool settings."""

    maxidle: int = 0
    maxactive: int = 0
    idletimeout: datetime.timedelta = datetime.timedelta(0)


_ZERO = datetime.timedelta(0)


@dataclass(frozen=True)
class RedisConfig:
    """Distribution's ``redis`` section, in its 2.8 shape (``addr``, ``pool``) and its 3.x
    shape (go-redis's ``UniversalOptions``: ``addrs``, ``poolsize``, ...). One server, or,
    with ``mastername``, the master the sentinels in ``addrs`` name (go-redis's failover
    client); no cluster. Zero durations and sizes mean go-redis's defaults."""

    addr: str = ""
    addrs: list[str] = field(default_factory=list)
    username: str = ""
    password: str = ""
    db: int = field(default=0, metadata=meta(check=between(0, 1_000_000)))
    clientname: str = ""
    protocol: int = field(default=0, metadata=meta(check=between(0, 3)))
    dialtimeout: datetime.timedelta = _ZERO
    readtimeout: datetime.timedelta = _ZERO
    writetimeout: datetime.timedelta = _ZERO
    tls: RedisTLSConfig = field(default_factory=RedisTLSConfig)
    pool: RedisPoolConfig = field(default_factory=RedisPoolConfig)
    poolsize: int = 0
    pooltimeout: datetime.timedelta = _ZERO
    poolfifo: bool = False
    minidleconns: int = 0
    maxidleconns: int = 0
    maxactiveconns: int = 0
    connmaxidletime: datetime.timedelta = _ZERO
    connmaxlifetime: datetime.timedelta = _ZERO
    # go-redis: 0 is its default (3 retries), -1 none.
    maxretries: int = field(default=0, metadata=meta(check=between(-1, 100)))
    minretrybackoff: datetime.timedelta = _ZERO
    maxretrybackoff: datetime.timedelta = _ZERO
    contexttimeoutenabled: bool = False
    mastername: str = ""
    sentinelusername: str = ""
    sentinelpassword: str = ""
    maxredirects: int = 0
    readonly: bool = False
    routebylatency: bool = False
    routerandomly: bool = False
    disableindentity: bool = False
    identitysuffix: str = ""
    unstableresp3: bool = False

    def __post_init__(self) -> None:
        if self.mastername:
            if not self.addrs or self.addr:
                raise InvalidSetting(
                    "addrs", "with mastername, addrs lists the sentinels (and addr is unset)"
                )
        elif len(self.addrs) > 1:
            raise InvalidSetting(
                "addrs",
                "a Redis cluster is not supported: give one server, or the sentinels and "
                "mastername",
            )
        for address in self.addrs or ([self.addr] if self.addr else []):
            try:
                listen_host_port(address)
            except ValueError as e:
                raise InvalidSetting("addrs" if self.addrs else "addr", str(e)) from None

    @property
    def configured(self) -> bool:
        """Whether a server (or sentinels) is configured at all."""
        return bool(self.addr or self.addrs)

    @property
    def address(self) -> str:
        """The server's ``host:port`` ("" when none is configured, or with sentinels)."""
        if self.mastername:
            return ""
        return self.addrs[0] if self.addrs else self.addr

    @property
    def sentinels(self) -> list[str]:
        """The sentinels' ``host:port`` (empty without ``mastername``)."""
        return list(self.addrs) if self.mastername else []

    def describe(self) -> str:
        """Where Redis is, for a log line or a health answer (never a secret)."""
        if self.mastername:
            return f"master {self.mastername} of sentinels {', '.join(self.sentinels)}"
        return self.address
