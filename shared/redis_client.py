"""A Redis client (``redis.asyncio``) built from the ``redis`` section, with go-redis's
defaults where Distribution's keys are unset. The registry's caches, tokenauth's login
buckets and anything else that shares the registries' Redis take the ready client."""

from __future__ import annotations

import ssl
from pathlib import Path

from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from shared.listener import listen_host_port
from shared.redis_config import RedisConfig


def _seconds(value: float, default: float) -> float:
    return value if value > 0 else default


def redis_client(settings: RedisConfig) -> Redis:
    """A client for the configured server; it connects on first use, so a Redis that is
    down at start-up delays nothing."""
    host, port = listen_host_port(settings.address)
    read = max(settings.readtimeout, settings.writetimeout).total_seconds()
    options: dict[str, object] = {
        "host": host or "localhost",
        "port": port,
        "db": settings.db,
        "username": settings.username or None,
        "password": settings.password or None,
        "client_name": settings.clientname or None,
        # go-redis's defaults: 5s to connect, 3s to read or write.
        "socket_connect_timeout": _seconds(settings.dialtimeout.total_seconds(), 5.0),
        "socket_timeout": _seconds(read, 3.0),
        "protocol": settings.protocol or 2,
    }
    if settings.maxretries > 0:
        options["retry"] = Retry(
            ExponentialBackoff(
                cap=_seconds(settings.maxretrybackoff.total_seconds(), 0.512),
                base=_seconds(settings.minretrybackoff.total_seconds(), 0.008),
            ),
            settings.maxretries,
        )
    if settings.tls.active:
        options["connection_class"] = SSLConnection
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if settings.tls.certificate:
            options["ssl_certfile"] = settings.tls.certificate
            options["ssl_keyfile"] = settings.tls.key or None
        if settings.tls.clientcas:
            options["ssl_ca_data"] = "".join(Path(p).read_text() for p in settings.tls.clientcas)
    size = (
        settings.poolsize or settings.maxactiveconns or settings.pool.maxactive or 64
    )  # go-redis: 10 per CPU
    pool = BlockingConnectionPool(
        max_connections=size,
        timeout=_seconds(settings.pooltimeout.total_seconds(), _seconds(read, 3.0) + 1.0),
        **options,  # type: ignore[arg-type]
    )
    return Redis.from_pool(pool)  # closing the client closes the pool
