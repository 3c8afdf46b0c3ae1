"""Manifest endpoints: ``GET``/``HEAD``/``PUT``/``DELETE /v2/<name>/manifests/<reference>``."""

from __future__ import annotations

from aiohttp import web

from registry.handlers.base import read_bounded, reference_param, repository, route_param, url_for
from registry.keys import CONFIG, METRICS, MIRRORS
from registry.notifications import bridge
from registry.oci.digest import Digest
from registry.storage.manifest_formats import MAX_MANIFEST_SIZE
from registry.storage.manifests import StoredManifest
from registry.storage.registry import Repository
from shared import errors
from shared.errors import RegistryError


async def get_manifest(request: web.Request) -> web.StreamResponse:
    reference = reference_param(route_param(request, "reference"))
    repo = repository(request)
    manifest = await _manifest(request, repo, reference)
    bridge.manifest_pulled(request, repo.name, manifest, _tag(reference))
    return web.Response(body=manifest.body, headers=_manifest_headers(manifest))


async def head_manifest(request: web.Request) -> web.StreamResponse:
    reference = reference_param(route_param(request, "reference"))
    repo = repository(request)
    manifest = await _manifest(request, repo, reference)
    await repo.manifests.noticed(manifest.digest)
    response = web.StreamResponse(headers=_manifest_headers(manifest))
    response.content_length = len(manifest.body)
    return response


async def put_manifest(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    reference = reference_param(route_param(request, "reference"), for_write=True)
    body = await read_bounded(request, MAX_MANIFEST_SIZE, errors.MANIFEST_INVALID)
    manifest, parsed = await repo.manifests.put(
        reference, body, request.headers.get("Content-Type")
    )
    bridge.manifest_pushed(request, repo.name, manifest, parsed, _tag(reference))
    if (metrics := request.app.get(METRICS)) is not None:
        metrics.manifest_pushed(manifest.media_type)
    headers = {
        "Location": url_for(request, f"/v2/{repo.name}/manifests/{manifest.digest}"),
        "Docker-Content-Digest": str(manifest.digest),
        "Content-Length": "0",
    }
    if parsed.subject is not None:
        headers["OCI-Subject"] = str(parsed.subject.digest)
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request) -> web.StreamResponse:
    await delete_reference(request, repository(request), route_param(request, "reference"))
    return web.Response(status=202, headers={"Content-Length": "0"})


async def delete_reference(request: web.Request, repo: Repository, raw_reference: str) -> None:
    """Delete a tag, or a manifest revision and its tags, and send the events: what
    ``DELETE /v2/<name>/manifests/<reference>`` does, and what the web interface calls, so
    both validate, refuse and record the same way. The caller has checked the delete right."""
    config = request.app[CONFIG]
    if not config.storage.delete.enabled:
        raise RegistryError(errors.UNSUPPORTED, "deletion is disabled", status=405)
    if config.storage.maintenance.readonly.enabled:
        raise RegistryError(errors.UNSUPPORTED, "the registry is in read-only mode", status=405)
    reference = reference_param(raw_reference)
    if isinstance(reference, Digest):
        untagged = await repo.manifests.delete(reference)
        bridge.deleted(request, repo.name, digest=str(reference))
        for tag in untagged:  # as Distribution 2.8: one event per tag the deletion removed
            bridge.deleted(request, repo.name, tag=tag)
    else:
        await repo.tags.untag(reference)
        bridge.deleted(request, repo.name, tag=reference)


async def _manifest(
    request: web.Request, repo: Repository, reference: Digest | str
) -> StoredManifest:
    """The stored manifest; through the pull-through cache for a mirrored repository."""
    mirror = request.app[MIRRORS].for_name(repo.name)
    if mirror is None:
        return await repo.manifests.get(reference)
    return await mirror.manifest(repo, reference)


def _tag(reference: Digest | str) -> str:
    return "" if isinstance(reference, Digest) else reference


def _manifest_headers(manifest: StoredManifest) -> dict[str, str]:
    digest = str(manifest.digest)  # once: Digest.__str__ is a Python call
    return {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
    }
