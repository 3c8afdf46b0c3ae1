"""The middleware that puts every ``/v2/`` request through the access controller."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from registry.auth.access import required_access
from registry.auth.base import AccessController
from registry.keys import MOUNT_ALLOWED, ROUTE
from registry.routes import resolve


def auth_middleware(controller: AccessController) -> Middleware:
    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        if "/v2" not in raw_path:
            return await handler(request)
        match = None
        if not raw_path.endswith(("/v2/", "/v2")):
            match = resolve(request)
            request[ROUTE] = match
        access = required_access(request, match)
        # Challenges name the optional scopes too, so clients ask for them up front.
        grant = await controller.authorize(request, access.needed + access.optional)
        if not all(grant.allows(scope) for scope in access.needed):
            raise controller.insufficient(request, access.needed + access.optional)
        request[MOUNT_ALLOWED] = all(grant.allows(scope) for scope in access.optional)
        return await handler(request)

    return check_access
