"""``create_app(config)``: the tokenauth aiohttp application, its state and routes.

Everything the configuration names (signing keys, authenticators, authorizers) is loaded
here (``tokenauth.wiring``), so a broken file stops the service before it listens, with a
message naming the key or rule.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from shared import request_context
from shared.metrics import exposition
from shared.ratelimit_redis import RedisBuckets
from shared.redis_client import redis_client
from tokenauth import handlers, wiring
from tokenauth.authn.htpasswd import HtpasswdUsers
from tokenauth.authz import AclAuthorizer
from tokenauth.config import TokenAuthConfig
from tokenauth.errors import error_middleware
from tokenauth.health import ServiceHealth
from tokenauth.issuer import TokenIssuer
from tokenauth.keys import CONFIG, HEALTH, ISSUER, METRICS
from tokenauth.metrics import TokenAuthMetrics
from tokenauth.signing import SigningKeys, watching

MAX_BODY = 64 * 1024  # an OAuth2 form is a few hundred bytes
JWKS_PATH = "/.well-known/jwks.json"
HEALTH_PATH = "/health"


def create_app(config: TokenAuthConfig) -> web.Application:
    signer = SigningKeys(config.token)
    metrics = TokenAuthMetrics() if config.http.debug.prometheus.enabled else None
    authenticators = wiring.authenticators(config, metrics)
    authorizers = wiring.authorizers(config, metrics)
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    request_context.install(app, config.http.trustedproxies)
    app[CONFIG] = config
    buckets = login_buckets(config)
    app[ISSUER] = TokenIssuer(config, signer, authenticators, authorizers, buckets)
    if buckets is not None:
        app.on_cleanup.append(lambda _: buckets.close())
    app[HEALTH] = ServiceHealth(signer, authenticators.health, authorizers.health)
    if metrics is not None:
        app[METRICS] = metrics
    # Before serving, so that even the first refusal is padded to a measured check time.
    app.on_startup.append(lambda _: authenticators.calibrate())
    app.on_cleanup.append(lambda _: asyncio.to_thread(authenticators.close))
    app.cleanup_ctx.append(lambda _: watching(signer))
    # The users files and the ACL, watched while serving (tokenauth.file_changes).
    for member in authenticators.members:
        if isinstance(member, HtpasswdUsers):
            app.cleanup_ctx.append(lambda _, users=member: users.watching())
    for authorizer in authorizers.members:
        if isinstance(authorizer, AclAuthorizer):
            app.cleanup_ctx.append(lambda _, acl=authorizer.acl: acl.watching())
    app.router.add_routes(
        [
            web.get(config.http.path, handlers.get_token, allow_head=False),
            web.post(config.http.path, handlers.post_token),
            web.get(JWKS_PATH, handlers.get_jwks),
            web.get(HEALTH_PATH, handlers.get_health),
        ]
    )
    return app


def login_buckets(config: TokenAuthConfig) -> RedisBuckets | None:
    """The login buckets in the configured Redis, shared by replicas; None (this process's
    own) when no ``redis.addr`` (or ``addrs``) is set. Nothing connects before the first
    login."""
    if not config.redis.configured or not config.ratelimit.enabled:
        return None
    where = f"Redis at {config.redis.describe()}"
    return RedisBuckets(redis_client(config.redis), config.ratelimit, where=where)


def create_debug_app(served: web.Application, *, multiprocess: bool = False) -> web.Application:
    """The app of ``http.debug.addr``: ``served``'s metrics, when they are enabled;
    ``multiprocess``: those of every worker (``--workers``), summed."""
    app = web.Application()
    config = served[CONFIG].http.debug.prometheus
    if config.enabled:
        metrics = served[METRICS]

        async def get_metrics(request: web.Request) -> web.Response:
            # Reading every worker's files is blocking work: off the event loop.
            body, content_type = await asyncio.to_thread(
                exposition, metrics.registry, multiprocess=multiprocess
            )
            response = web.Response(body=body, headers={"Cache-Control": "no-store"})
            response.headers["Content-Type"] = content_type
            return response

        app.router.add_get(config.path, get_metrics)
    return app
