"""``auth: htpasswd``: HTTP Basic against a bcrypt htpasswd file (the guide's native auth).

Anyone with a valid password may do everything; the file is re-read when it changes.
bcrypt runs in a thread, and a short-lived memory of verified credentials (an HMAC, never
the password) spares a ``docker push`` of many layers a bcrypt per request. Failed logins
are limited per account and per client address like tokenauth's (``auth.htpasswd.ratelimit``,
see docs/security.md): 429 with ``Retry-After`` once a budget is spent, 503 with
``Retry-After`` when every password-check slot is busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from registry.auth.base import Challenge, Grant
from registry.config import HtpasswdAuthConfig
from shared import errors
from shared.authorization import BasicCredentials, MalformedAuthorization, parse_authorization
from shared.client_address import client_address
from shared.credentials import HtpasswdAuthenticator, VerifierBusy
from shared.errors import RegistryError
from shared.ratelimit import LoginLimits, Throttled
from shared.ratelimit_redis import RedisBuckets
from shared.redis_client import redis_client
from shared.redis_config import RedisConfig
from shared.scope import Scope


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None for anything else
    (no header, another scheme, a malformed value, an empty user name)."""
    try:
        credentials = parse_authorization(header)
    except MalformedAuthorization:
        return None
    if not isinstance(credentials, BasicCredentials) or not credentials.user:
        return None
    return credentials.user, credentials.password


# Apart from tokenauth's keys in a Redis both may share: other users, other budgets.
REDIS_KEY_PREFIX = "portside:registry-ratelimit:"


class HtpasswdAccessController:
    def __init__(self, config: HtpasswdAuthConfig, redis: RedisConfig | None = None) -> None:
        """``redis``: with an address, the failure buckets live there, shared by every
        instance behind the balancer (each instance's own while Redis does not answer)."""
        if not config.path:
            raise ValueError("auth.htpasswd.path is required")
        self.realm = config.realm or "Registry Realm"
        self.users = HtpasswdAuthenticator(
            [config.path], concurrent_checks=config.ratelimit.concurrentchecks
        )
        self.buckets = None
        if redis is not None and redis.configured and config.ratelimit.enabled:
            self.buckets = RedisBuckets(
                redis_client(redis),
                config.ratelimit,
                where=f"Redis at {redis.describe()}",
                prefix=REDIS_KEY_PREFIX,
            )
        self.limits = LoginLimits(config.ratelimit, self.buckets)

    def _challenge(self) -> Challenge:
        return Challenge(f'Basic realm="{self.realm}"')

    async def authorize(self, request: web.Request, needed: Sequence[Scope]) -> Grant:
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is None:
            raise self._challenge()
        user, password = credentials
        admission = self.limits.admission(user, client_address(request))
        try:
            ok = await self.users.authenticate(user, password, admission)
        except Throttled as error:
            raise RegistryError(
                errors.TOOMANYREQUESTS,
                "too many failed logins; try again later",
                headers={"Retry-After": str(error.retry_after)},
            ) from None
        except VerifierBusy:
            raise RegistryError(
                errors.UNAVAILABLE,
                "too many logins being checked; try again shortly",
                headers={"Retry-After": "1"},
            ) from None
        if not ok:
            raise self._challenge()
        return Grant(user, everything=True)

    def insufficient(self, request: web.Request, needed: Sequence[Scope]) -> Challenge:
        return self._challenge()

    async def start(self) -> None:
        """Time a password check before serving, so that even the first refusal is padded."""
        await self.users.calibrate()

    async def close(self) -> None:
        await asyncio.to_thread(self.users.close)
        if self.buckets is not None:
            await self.buckets.close()
