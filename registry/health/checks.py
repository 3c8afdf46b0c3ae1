"""What each health check tests: the storage driver, Redis, a file, an HTTP URI, a TCP
address. Each is an async callable that returns when the thing is healthy and raises
:class:`CheckFailed` with a message for the health answer (never a secret) when not."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable

import aiohttp
import yarl
from redis.exceptions import RedisError

from registry.config_health import public_uri
from registry.health.monitor import CheckFailed
from registry.storage.errors import DriverError
from registry.storage.registry import Registry
from shared.listener import listen_host_port
from shared.redis_config import RedisConfig

Check = Callable[[], Awaitable[None]]


def storage_check(storage: Registry) -> Check:
    async def check() -> None:
        try:
            await storage.check_health()
        except DriverError as error:
            raise CheckFailed(str(error) or type(error).__name__) from None

    return check


def redis_check(settings: RedisConfig) -> Check:
    """A PING on a connection of its own, so the answer is Redis's, not that of a pooled
    connection or of the cache's back-off; once, not retried, so that it answers within
    the check's interval. The message names the address (or the sentinels) only: never
    the password (it is also scrubbed from whatever the client library says)."""
    from shared.redis_client import redis_client  # only when Redis is configured

    address = settings.describe()
    once = dataclasses.replace(settings, maxretries=-1)

    def scrubbed(text: str) -> str:
        for secret in (settings.password, settings.sentinelpassword):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def check() -> None:
        client = redis_client(once)
        try:
            await client.ping()
        except (RedisError, OSError) as error:
            detail = scrubbed(str(error)) or type(error).__name__
            raise CheckFailed(f"redis at {address}: {detail}") from None
        finally:
            await client.aclose()

    return check


def file_check(path: str) -> Check:
    """Fails while ``path`` exists: an operator takes a registry out of rotation by
    creating the file (Distribution's FileChecker)."""
    absolute = os.path.abspath(path)

    async def check() -> None:
        try:
            await asyncio.to_thread(os.stat, absolute)
        except FileNotFoundError:
            return
        except OSError as error:
            raise CheckFailed(f"{absolute}: {error.strerror or type(error).__name__}") from None
        raise CheckFailed("file exists")

    return check


def http_check(uri: str, headers: dict[str, list[str]], status: int, timeout: float) -> Check:
    """A HEAD of ``uri`` (redirects followed, as Go's client does) that must answer
    ``status``. Headers are sent, never reported."""
    name = public_uri(uri)
    sent = [(header, value) for header, values in headers.items() for value in values]
    # Credentials in the URI become Basic auth unless an Authorization header is
    # configured, which wins (as Go's client does).
    url = yarl.URL(uri)
    auth = None
    if url.user is not None and not any(h.lower() == "authorization" for h, _ in sent):
        auth = aiohttp.BasicAuth(url.user, url.password or "")
    target = url.with_user(None)

    async def check() -> None:
        client_timeout = aiohttp.ClientTimeout(total=timeout or None)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.head(target, headers=sent, auth=auth, allow_redirects=True) as response,
            ):
                answered = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise CheckFailed(f"{name}: error while checking: {reason}") from None
        if answered != status:
            raise CheckFailed(f"{name}: downstream service returned unexpected status: {answered}")

    return check


def tcp_check(addr: str, timeout: float) -> Check:
    """A TCP connection to ``addr``, closed at once."""
    host, port = listen_host_port(addr)

    async def check() -> None:
        try:
            async with asyncio.timeout(timeout or None):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else None
            raise CheckFailed(
                f"{addr}: connection failed: {reason or type(error).__name__}"
            ) from None
        writer.close()
        await writer.wait_closed()

    return check
