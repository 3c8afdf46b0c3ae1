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
_JSON_HEADERS = {"Content-Type": "application/json"}  # copied by each response


async def list_tags(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    limit = page_size(request, default=None, maximum=None)
    last = request.query.get("last")
    mirror = request.app[MIRRORS].for_name(repo.name)
    if mirror is None:
        # A page's body is made once per listing stamp (registry.storage.tags): a
        # repeated page costs the stamp's stat and a lookup.
        body, next_last = await repo.tags.rendered_page(limit, last, _tag_page)
    else:  # as Distribution's proxy: the upstream's tags, the cached ones if it is down
        body, next_last = _tag_page(repo.name, *page_of(await mirror.tags(repo), limit, last))
    response = web.Response(body=body, headers=_JSON_HEADERS)
    if next_last is not None and limit is not None:
        _link_next(request, response, f"/v2/{repo.name}/tags/list", limit, next_last)
    return response


def _tag_page(name: str, tags: list[str], more: bool) -> tuple[bytes, str | None]:
    """A tag-list page's body, and the tag the next page starts after (None: the last)."""
    return json.dumps({"name": name, "tags": tags}).encode(), tags[-1] if more and tags else None


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
