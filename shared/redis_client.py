"""A Redis client (``redis.asyncio``) built from the ``redis`` section, with go-redis's
defaults where Distribution's keys are unset. The registry's caches, tokenauth's login
buckets and anything else that shares the registries' Redis take the ready client.

With ``redis.mastername`` the client finds the master through the sentinels in
``redis.addrs`` (redis-py's ``Sentinel``, as go-redis's failover client does): a
connection asks the sentinels for the master's address when it connects, and a command
that meets a closed connection or a demoted master (``READONLY``, turned into a
connection error by redis-py) is retried on a new connection, so a failover costs the
commands in flight a short back-off, not an error, once the sentinels name the new master.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.listener import listen_host_port
from shared.redis_config import RedisConfig

# go-redis's: 3 retries, backing off from 8ms to at most 512ms.
DEFAULT_RETRIES = 3


def _seconds(value: float, default: float) -> float:
    return value if value > 0 else default


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's sentinel pool that waits for a free connection (as the pool of one
    server here does) instead of failing when all ``max_connections`` are in use."""


class SentinelMasterClient(Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    sentinel_manager: Sentinel | None = None  # (``sentinel`` is a command's name)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


def _retry(settings: RedisConfig) -> Retry:
    """Retries of a command on a connection error (a refused or closed connection, a
    master demoted by a failover). Not on a timeout: a hung server would cost every
    command several timeouts; the cache gives up and reads storage instead."""
    retries = DEFAULT_RETRIES if settings.maxretries == 0 else max(settings.maxretries, 0)
    backoff = ExponentialBackoff(
        cap=_seconds(settings.maxretrybackoff.total_seconds(), 0.512),
        base=_seconds(settings.minretrybackoff.total_seconds(), 0.008),
    )
    return Retry(backoff, retries, supported_errors=(RedisConnectionError,))


def _connection_options(settings: RedisConfig) -> dict[str, Any]:
    """What every connection (to the master, to a sentinel) shares."""
    read = max(settings.readtimeout, settings.writetimeout).total_seconds()
    options: dict[str, Any] = {
        # go-redis's defaults: 5s to connect, 3s to read or write.
        "socket_connect_timeout": _seconds(settings.dialtimeout.total_seconds(), 5.0),
        "socket_timeout": _seconds(read, 3.0),
        "protocol": settings.protocol or 2,
        "retry": _retry(settings),
    }
    if settings.tls.active:
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if settings.tls.certificate:
            options["ssl_certfile"] = settings.tls.certificate
            options["ssl_keyfile"] = settings.tls.key or None
        if settings.tls.clientcas:
            options["ssl_ca_data"] = "".join(Path(p).read_text() for p in settings.tls.clientcas)
    return options


def _pool_options(settings: RedisConfig) -> dict[str, Any]:
    read = max(settings.readtimeout, settings.writetimeout).total_seconds()
    return {
        # go-redis: 10 per CPU
        "max_connections": (
            settings.poolsize or settings.maxactiveconns or settings.pool.maxactive or 64
        ),
        "timeout": _seconds(settings.pooltimeout.total_seconds(), _seconds(read, 3.0) + 1.0),
    }


def _server_options(settings: RedisConfig) -> dict[str, Any]:
    """What the connections to the server (not to a sentinel) add."""
    return {
        "db": settings.db,
        "username": settings.username or None,
        "password": settings.password or None,
        "client_name": settings.clientname or None,
    }


def redis_client(settings: RedisConfig) -> Redis:
    """A client for the configured server (or the sentinels' master); it connects on first
    use, so a Redis that is down at start-up delays nothing."""
    if settings.mastername:
        return _sentinel_master_client(settings)
    host, port = listen_host_port(settings.address)
    options = {**_connection_options(settings), **_server_options(settings)}
    if settings.tls.active:
        options["connection_class"] = SSLConnection
    pool = BlockingConnectionPool(
        host=host or "localhost", port=port, **_pool_options(settings), **options
    )
    return Redis.from_pool(pool)  # closing the client closes the pool


def _sentinel_master_client(settings: RedisConfig) -> Redis:
    sentinel_options = {
        **_connection_options(settings),
        # go-redis's SentinelUsername/SentinelPassword: the sentinels' own credentials.
        "username": settings.sentinelusername or None,
        "password": settings.sentinelpassword or None,
        # Not retried: finding the master already asks each sentinel in turn, and a
        # command to the master retries the whole search (a sentinel that is down would
        # otherwise cost every search the back-off of all its retries).
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.tls.active:
        sentinel_options["connection_class"] = SSLConnection  # go-redis: TLS to both
    addresses = []
    for address in settings.sentinels:
        host, port = listen_host_port(address)
        addresses.append((host or "localhost", port))
    sentinel = Sentinel(addresses, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        settings.mastername,
        redis_class=SentinelMasterClient,
        connection_pool_class=BlockingSentinelConnectionPool,
        connection_class=(
            SentinelManagedSSLConnection if settings.tls.active else SentinelManagedConnection
        ),
        **_pool_options(settings),
        **_connection_options(settings),
        **_server_options(settings),
    )
    assert isinstance(client, SentinelMasterClient)
    client.sentinel_manager = sentinel
    return client
