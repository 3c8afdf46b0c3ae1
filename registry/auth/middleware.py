"""The middleware that puts every ``/v2/`` request through the access controller."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from registry.auth.access import required_access
from registry.auth.base import AccessController
from registry.keys import MOUNT_ALLOWED, ROUTE
from registry.notifications.events import ACTOR
from registry.routes import dispatch, get_base, resolve


def auth_middleware(controller: AccessController) -> Middleware:
    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Decide by the handler the router chose, never by looking for "/v2" in the path:
        # "/v2/<name>/manifests/v2" ends like the base endpoint but needs the repository's
        # scope, and "/%762/" reaches the same handlers as "/v2/".
        routed_to = request.match_info.handler
        if routed_to is get_base:
            match = None
        elif routed_to is dispatch:
            match = resolve(request)
            request[ROUTE] = match
        else:  # "/", and the router's own 404s and 405s: nothing of the API is served
            return await handler(request)
        access = required_access(request, match)
        # Challenges name the optional scopes too, so clients ask for them up front.
        grant = await controller.authorize(request, access.needed + access.optional)
        if not all(grant.allows(scope) for scope in access.needed):
            raise controller.insufficient(request, access.needed + access.optional)
        request[MOUNT_ALLOWED] = all(grant.allows(scope) for scope in access.optional)
        request[ACTOR] = grant.account  # events name who did what
        return await handler(request)

    return check_access
