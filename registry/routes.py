"""The whole V2 route table, as data, and the one handler that dispatches on it."""

from __future__ import annotations

from aiohttp import web

from registry.handlers import blobs, listings, manifests, uploads
from registry.keys import CONFIG, MIRRORS, ROUTE
from registry.routing import Route, RouteMatch, match_route
from registry.urls import path_prefix
from shared import errors
from shared.access_log import LOG_FIELDS
from shared.access_text import ROUTE_FIELD
from shared.errors import RegistryError

_DIGEST = r"(?P<digest>[^/]+)"

REPOSITORY_ROUTES: tuple[Route, ...] = (
    Route(
        "manifest",
        r"/manifests/(?P<reference>[^/]+)",
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.head_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    Route("upload_start", r"/blobs/uploads/?", {"POST": uploads.start_upload}),
    Route(
        "upload",
        r"/blobs/uploads/(?P<upload_id>[^/]+)",
        {
            "GET": uploads.get_upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.finish_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    Route(
        "blob",
        rf"/blobs/{_DIGEST}",
        {"GET": blobs.get_blob, "HEAD": blobs.head_blob, "DELETE": blobs.delete_blob},
    ),
    Route("tags", r"/tags/list", {"GET": listings.list_tags, "HEAD": listings.list_tags}),
    Route("referrers", rf"/referrers/{_DIGEST}", {"GET": listings.list_referrers}),
)

CATALOG = RouteMatch("catalog", "", {}, listings.list_catalog)


# Distribution's names for the route variables in its log lines (vars.name, vars.uuid ...).
_LOG_VARIABLES = {"upload_id": "vars.uuid"}


# The routes of recent requests, by prefix, method and raw path, with their access-line
# fields: a busy registry serves the same few paths over and over (a tag pulled by every
# node, the blobs of its image), and matching one anew (the prefix, the route table's
# expressions, the name's grammar, the fields) was about 7 µs of a 200 µs manifest GET.
# Only successful matches are kept (a refused path raises each time). Bounded, as the
# paths are the clients' to vary: short paths only, and past the bound it starts over.
_RESOLVED: dict[tuple[str, str, str], tuple[RouteMatch, dict[str, str]]] = {}
RESOLVED_KEPT = 4096
RESOLVED_LONGEST = 512


def resolve(request: web.Request) -> RouteMatch:
    """The route of a ``/v2/...`` request, also named in its access line."""
    base = path_prefix(request.app[CONFIG]) + "/v2/"
    raw_path = request.rel_url.raw_path
    key = (base, request.method, raw_path)
    known = _RESOLVED.get(key)
    if known is None:
        known = _match(request, base, raw_path), {}
        match, fields = known
        fields[ROUTE_FIELD] = match.resource
        if match.name:
            fields["vars.name"] = match.name
        for name, value in match.params.items():
            fields[_LOG_VARIABLES.get(name, f"vars.{name}")] = value
        if len(raw_path) <= RESOLVED_LONGEST:
            if len(_RESOLVED) >= RESOLVED_KEPT:
                _RESOLVED.clear()
            _RESOLVED[key] = known
    # The request's own copy, and its first fields: a route is resolved before any
    # handler adds its own. Set, not added (add_log_fields): Request.setdefault is
    # MutableMapping's, three Python calls and a KeyError raised and caught, per request.
    request[LOG_FIELDS] = known[1].copy()
    return known[0]


def _match(request: web.Request, base: str, raw_path: str) -> RouteMatch:
    """The route of a ``/v2/...`` request, from its raw (undecoded) path."""
    if not raw_path.startswith(base):
        # The router matched the decoded path; "/%762/..." is not an API path.
        raise RegistryError(errors.UNSUPPORTED, "no such endpoint", status=404)
    tail = raw_path[len(base) :]
    if tail == "_catalog":
        if request.method not in ("GET", "HEAD"):
            raise RegistryError(errors.UNSUPPORTED, status=405, headers={"Allow": "GET, HEAD"})
        return CATALOG
    return match_route(REPOSITORY_ROUTES, tail, request.method)


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The API's handler behind the auth middleware, which resolved the route."""
    match = request[ROUTE]
    if request.method in _WRITES:
        _refuse_write(request, match)
    return await match.handler(request)


async def resolve_and_dispatch(request: web.Request) -> web.StreamResponse:
    """The API's handler when no access controller is configured: nothing resolved the
    route before it. Two handlers rather than one that looks for a route first: a look-up
    that fails raises and catches a KeyError, on every request of a registry without
    access control."""
    match = resolve(request)
    request[ROUTE] = match
    if request.method in _WRITES:
        _refuse_write(request, match)
    return await match.handler(request)


def _refuse_write(request: web.Request, match: RouteMatch) -> None:
    if request.app[CONFIG].storage.maintenance.readonly.enabled:
        raise RegistryError(errors.UNSUPPORTED, "the registry is in read-only mode", status=405)
    if request.app[MIRRORS].for_name(match.name) is not None:
        # As Distribution's proxy: a mirrored repository takes no pushes or deletes.
        raise RegistryError(errors.UNSUPPORTED, status=405)


async def get_base(request: web.Request) -> web.StreamResponse:
    """``GET /v2/``: the API version check every client makes first."""
    return web.Response(body=b"{}", content_type="application/json")


async def get_root(request: web.Request) -> web.StreamResponse:
    """``GET /``: always 200, for load-balancer health checks."""
    return web.Response(body=b"", content_type="text/plain")
