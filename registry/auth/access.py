"""The access a request needs, derived from its route and method alone.

GET/HEAD pull; POST/PUT/PATCH pull and push; DELETE delete; a cross-repository mount
also wants pull on ``from`` (optional: without it the mount falls back to an upload);
``/v2/_catalog`` needs ``registry:catalog:*``; ``/v2/`` itself needs only a valid caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from registry.routing import RouteMatch
from shared.reference import is_valid_name
from shared.scope import Scope

CATALOG_SCOPE = Scope.of("registry", "catalog", ["*"])
# Each already in Scope's normal form (sorted, unique), so a request's scope is built
# directly rather than normalised again on every request.
_ACTIONS = {
    "GET": ("pull",),
    "HEAD": ("pull",),
    "POST": ("pull", "push"),
    "PUT": ("pull", "push"),
    "PATCH": ("pull", "push"),
    "DELETE": ("delete",),
}


@dataclass(frozen=True, slots=True)
class RequiredAccess:
    needed: tuple[Scope, ...]
    optional: tuple[Scope, ...] = ()


def required_access(request: web.Request, match: RouteMatch | None) -> RequiredAccess:
    """What ``request`` needs; ``match`` is None for ``/v2/`` itself."""
    if match is None:
        return RequiredAccess(())
    if match.resource == "catalog":
        return RequiredAccess((CATALOG_SCOPE,))
    actions = _ACTIONS.get(request.method, ("pull", "push"))
    needed = (Scope("repository", match.name, actions),)
    if match.resource != "upload_start" or "mount" not in request.query:
        return RequiredAccess(needed)  # the query is parsed only where it can matter
    source = request.query.get("from")
    if source and is_valid_name(source) and source != match.name:
        return RequiredAccess(needed, (Scope.of("repository", source, ["pull"]),))
    return RequiredAccess(needed)
