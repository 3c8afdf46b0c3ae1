"""``create_app(config)``: the tokenauth aiohttp application, its state and routes.

Everything the configuration names (signing key, users files, ACL) is loaded here, so a
broken file stops the service before it listens, with a message naming the key or rule.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from shared import request_context
from shared.config import ConfigError
from shared.credentials import HtpasswdAuthenticator
from tokenauth import handlers
from tokenauth.acl import AclError, AclFile
from tokenauth.config import TokenAuthConfig
from tokenauth.errors import error_middleware
from tokenauth.issuer import TokenIssuer
from tokenauth.keys import CONFIG, ISSUER
from tokenauth.signing import load_signer

MAX_BODY = 64 * 1024  # an OAuth2 form is a few hundred bytes
JWKS_PATH = "/.well-known/jwks.json"
HEALTH_PATH = "/health"


def create_app(config: TokenAuthConfig) -> web.Application:
    signer = load_signer(config.token)
    try:
        authenticator = HtpasswdAuthenticator(
            config.users,
            cache_ttl=config.credentialcache.ttl,
            cache_entries=config.credentialcache.maxentries,
            concurrent_checks=config.ratelimit.concurrentchecks,
        )
    except OSError as error:
        raise ConfigError(f"users: {error}") from None
    try:
        acl = AclFile(config.acl) if config.acl else None
    except (OSError, AclError) as error:
        raise ConfigError(f"acl: {error}") from None
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    request_context.install(app, config.http.trustedproxies)
    app[CONFIG] = config
    app[ISSUER] = TokenIssuer(config, signer, authenticator, acl)
    # Before serving, so that even the first refusal is padded to a measured check time.
    app.on_startup.append(lambda _: authenticator.calibrate())
    app.on_cleanup.append(lambda _: asyncio.to_thread(authenticator.close))
    app.router.add_routes(
        [
            web.get(config.http.path, handlers.get_token, allow_head=False),
            web.post(config.http.path, handlers.post_token),
            web.get(JWKS_PATH, handlers.get_jwks),
            web.get(HEALTH_PATH, handlers.get_health),
        ]
    )
    return app
