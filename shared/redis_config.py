"""Configuration of Redis: Distribution's ``redis`` section, which the registry (its
scale-out cache) and tokenauth (its login buckets, across replicas) read alike.

Kept apart from the services' configs (which import it into their schemas) because it is a
long list of Distribution's keys with checks of its own. (The S3 driver's keys live beside
the driver, in ``registry.storage.s3_settings``.) ``listen_host_port``, the Go-style
address parser, lives here because Redis's ``addr`` and ``http.addr`` both use it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field

from shared.config import InvalidSetting, between, meta

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
    shape (go-redis options: ``addrs``, ``poolsize``, ...). One server: no cluster or
    sentinel. Zero durations and sizes mean the client library's defaults."""

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
    maxretries: int = 0
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
        if len(self.addrs) > 1 or self.mastername:
            raise InvalidSetting(
                "addrs", "a Redis cluster or sentinels are not supported; give one server"
            )
        if self.address:
            try:
                listen_host_port(self.address)
            except ValueError as e:
                raise InvalidSetting("addrs" if self.addrs else "addr", str(e)) from None

    @property
    def address(self) -> str:
        """The server's ``host:port`` ("" when none is configured)."""
        return self.addrs[0] if self.addrs else self.addr


def listen_host_port(addr: str) -> tuple[str, int]:
    """Split a Go-style TCP listen address: ``":5000"`` → ``("", 5000)`` (empty host: every
    interface, IPv4 and IPv6, as Go listens; asyncio and aiohttp read "" the same way),
    ``"localhost:5000"``, ``"0.0.0.0:5000"``, ``"[::]:5000"`` → ``("::", 5000)``."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError("expected HOST:PORT, such as :5000 or [::1]:5000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError("expected an IPv6 address between the brackets") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError("an IPv6 address needs brackets, such as [::1]:5000")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return host, int(port)
