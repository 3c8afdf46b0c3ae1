"""Listing endpoints: tags of a repository, the catalog, and a subject's referrers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from registry.handlers.base import (
    digest_param,
    page_size,
    repository,
    route_param,
    url_for,
)
from registry.keys import CONFIG, MIRRORS, STORAGE
from registry.oci import mediatypes
from registry.storage.tags import page_of

DEFAULT_CATALOG_PAGE = 100


async def list_tags(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    limit = page_size(request, default=None, maximum=None)
    last = request.query.get("last")
    mirror = request.app[MIRRORS].for_name(repo.name)
    if mirror is None:
        tags, more = await repo.tags.page(limit, last)
    else:  # as Distribution's proxy: the upstream's tags, the cached ones if it is down
        tags, more = page_of(await mirror.tags(repo), limit, last)
    response = _json({"name": repo.name, "tags": tags})
    if more and tags and limit is not None:
        _link_next(request, response, f"/v2/{repo.name}/tags/list", limit, tags[-1])
    return response


async def list_catalog(request: web.Request) -> web.StreamResponse:
    maximum = request.app[CONFIG].catalog.maxentries
    limit = page_size(request, default=min(DEFAULT_CATALOG_PAGE, maximum), maximum=maximum)
    assert limit is not None
    names, more = await request.app[STORAGE].catalog(limit, request.query.get("last"))
    response = _json({"repositories": names})
    if more and names:
        _link_next(request, response, "/v2/_catalog", limit, names[-1])
    return response


async def list_referrers(request: web.Request) -> web.StreamResponse:
    subject = digest_param(route_param(request, "digest"))
    artifact_type = request.query.get("artifactType") or None
    descriptors = await repository(request).referrers.for_subject(subject, artifact_type)
    response = _json(
        {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": descriptors},
        content_type=mediatypes.OCI_INDEX,
    )
    if artifact_type is not None:
        response.headers["OCI-Filters-Applied"] = "artifactType"
    return response


def _json(document: dict[str, Any], content_type: str = "application/json") -> web.Response:
    return web.Response(body=json.dumps(document).encode(), content_type=content_type)


def _link_next(
    request: web.Request, response: web.Response, path: str, limit: int, last: str
) -> None:
    query = urlencode({"n": limit, "last": last})
    response.headers["Link"] = f'<{url_for(request, path)}?{query}>; rel="next"'
