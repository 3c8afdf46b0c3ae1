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
    needed = (Scope.of("repository", match.name, actions),)
    source = request.query.get("from")
    if (
        match.resource == "upload_start"
        and "mount" in request.query
        and source
        and is_valid_name(source)
        and source != match.name
    ):
        return RequiredAccess(needed, (Scope.of("repository", source, ["pull"]),))
    return RequiredAccess(needed)
