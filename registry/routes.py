"""The whole V2 route table, as data, and the one handler that dispatches on it."""

from __future__ import annotations

from aiohttp import web

from registry.handlers import blobs, listings, manifests, uploads
from registry.keys import CONFIG, MIRRORS, ROUTE
from registry.routing import Route, RouteMatch, match_route
from registry.urls import path_prefix
from shared import errors
from shared.access_log import add_log_fields
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


def resolve(request: web.Request) -> RouteMatch:
    """The route of a ``/v2/...`` request, also named in its access line."""
    match = _match(request)
    fields = {"http.request.route": match.resource}
    if match.name:
        fields["vars.name"] = match.name
    for key, value in match.params.items():
        fields[_LOG_VARIABLES.get(key, f"vars.{key}")] = value
    add_log_fields(request, fields)
    return match


def _match(request: web.Request) -> RouteMatch:
    """The route of a ``/v2/...`` request, from its raw (undecoded) path."""
    raw_path = request.rel_url.raw_path
    base = path_prefix(request.app[CONFIG]) + "/v2/"
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
    match = request.get(ROUTE) or resolve(request)
    if request.method in _WRITES and request.app[CONFIG].storage.maintenance.readonly.enabled:
        raise RegistryError(errors.UNSUPPORTED, "the registry is in read-only mode", status=405)
    if request.method in _WRITES and request.app[MIRRORS].for_name(match.name) is not None:
        # As Distribution's proxy: a mirrored repository takes no pushes or deletes.
        raise RegistryError(errors.UNSUPPORTED, status=405)
    request[ROUTE] = match
    return await match.handler(request)


async def get_base(request: web.Request) -> web.StreamResponse:
    """``GET /v2/``: the API version check every client makes first."""
    return web.Response(body=b"{}", content_type="application/json")


async def get_root(request: web.Request) -> web.StreamResponse:
    """``GET /``: always 200, for load-balancer health checks."""
    return web.Response(body=b"", content_type="text/plain")
