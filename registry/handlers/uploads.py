"""Upload endpoints: start (monolithic, chunked, or a cross-repository mount), append a
chunk, report progress, finish with the digest, cancel.

A chunked upload started with ``digest-algorithm=<alg>`` (OCI distribution-spec) is hashed
with that algorithm as it arrives; the algorithm travels in the signed upload URL."""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web

from registry.handlers.base import (
    body_chunks,
    content_range,
    declared_length,
    digest_param,
    has_body,
    repository,
    route_param,
    url_for,
)
from registry.keys import METRICS, MOUNT_ALLOWED, STORAGE
from registry.notifications import bridge
from registry.oci.digest import HEX_LENGTHS, Digest, InvalidDigest, parse_digest
from registry.storage.blobs import BlobDescriptor
from registry.storage.errors import BlobUnknown, UploadUnknown, range_header
from registry.storage.registry import Repository
from registry.storage.uploads import UploadStatus
from registry.upload_state import DEFAULT_ALGORITHM, signed_upload_path, verified_upload
from shared import errors
from shared.errors import RegistryError
from shared.reference import is_valid_name


async def start_upload(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    mount = request.query.get("mount")
    source_name = request.query.get("from")
    if mount is not None and source_name is not None and request.get(MOUNT_ALLOWED, True):
        mounted = await _mount(request, repo, mount, source_name)
        if mounted is not None:
            bridge.blob_mounted(request, repo.name, mounted, source_name)
            return _created(request, repo.name, mounted)
        # A mount that cannot be done is not an error: fall back to a normal upload.
    digest_query = request.query.get("digest")
    if digest_query is not None:
        digest = digest_param(digest_query)
        status = await _started(request, repo)
        descriptor = await _finished(
            request,
            repo.uploads.finish(
                status.upload_id, digest, body_chunks(request), length=declared_length(request)
            ),
        )
        bridge.blob_pushed(request, repo.name, descriptor)
        return _created(request, repo.name, descriptor)
    algorithm = _announced_algorithm(request)
    status = await _started(request, repo)
    return _upload_response(request, repo.name, status, 202, algorithm)


def _announced_algorithm(request: web.Request) -> str:
    """``digest-algorithm``: the algorithm of the digest the client will finish with."""
    algorithm = request.query.get("digest-algorithm", DEFAULT_ALGORITHM)
    if algorithm not in HEX_LENGTHS:
        raise RegistryError(
            errors.DIGEST_INVALID, f"unsupported digest algorithm: {algorithm[:20]!r}"
        )
    return algorithm


async def _started(request: web.Request, repo: Repository) -> UploadStatus:
    status = await repo.uploads.start()
    if (metrics := request.app.get(METRICS)) is not None:
        metrics.uploads_started.inc()
    return status


async def _finished(request: web.Request, finishing: Awaitable[BlobDescriptor]) -> BlobDescriptor:
    """The blob an upload's last request committed, counted as completed or failed."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await finishing
    try:
        descriptor = await finishing
    except Exception:
        metrics.uploads_failed.inc()
        raise
    metrics.uploads_completed.inc()
    return descriptor


async def _mount(
    request: web.Request, repo: Repository, mount: str, source_name: str
) -> BlobDescriptor | None:
    if not is_valid_name(source_name):
        return None
    try:
        digest = parse_digest(mount)
    except InvalidDigest:
        return None
    source = request.app[STORAGE].repository(source_name)
    return await repo.blobs.mount_from(source.blobs, digest)


def _upload(request: web.Request, repo: Repository) -> tuple[str, str]:
    """The upload id of the URL, its signed ``_state`` checked first, and the digest
    algorithm the upload is hashed with."""
    return verified_upload(request, repo.name, route_param(request, "upload_id"))


async def _chunk_range(
    request: web.Request, repo: Repository, upload_id: str
) -> tuple[int, int] | None:
    """The chunk's Content-Range; a bad one is refused with the upload's current Range,
    so the client knows where to resume."""
    try:
        return content_range(request)
    except RegistryError as error:
        status = await repo.uploads.status(upload_id)
        error.headers["Range"] = range_header(status.size)
        raise


async def patch_upload(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    upload_id, algorithm = _upload(request, repo)
    chunk_range = await _chunk_range(request, repo, upload_id)
    status = await repo.uploads.append(
        upload_id,
        body_chunks(request),
        start=chunk_range[0] if chunk_range else None,
        length=declared_length(request),
        algorithm=algorithm,
    )
    return _upload_response(request, repo.name, status, 202, algorithm)


async def get_upload_status(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    upload_id, algorithm = _upload(request, repo)
    status = await repo.uploads.status(upload_id)
    return _upload_response(request, repo.name, status, 204, algorithm)


async def finish_upload(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    upload_id, _ = _upload(request, repo)  # the digest names its own algorithm
    digest = digest_param(request.query.get("digest"))
    try:
        descriptor = await _finish(request, repo, upload_id, digest)
    except UploadUnknown:
        # The finishing PUT is idempotent: sent again after its upload was committed
        # (by nginx to the next instance when the one that committed died before it
        # answered, or by the client after a lost response), it finds the upload gone
        # and the blob in the repository, which is what the client asked for.
        committed = await _linked(repo, digest)
        if committed is None:
            raise
        return _created(request, repo.name, committed)
    bridge.blob_pushed(request, repo.name, descriptor)
    return _created(request, repo.name, descriptor)


async def _finish(
    request: web.Request, repo: Repository, upload_id: str, digest: Digest
) -> BlobDescriptor:
    if not has_body(request):
        return await _finished(request, repo.uploads.finish(upload_id, digest))
    chunk_range = await _chunk_range(request, repo, upload_id)
    return await _finished(
        request,
        repo.uploads.finish(
            upload_id,
            digest,
            body_chunks(request),
            start=chunk_range[0] if chunk_range else None,
            length=declared_length(request),
        ),
    )


async def _linked(repo: Repository, digest: Digest) -> BlobDescriptor | None:
    try:
        return await repo.blobs.stat(digest)
    except BlobUnknown:
        return None


async def cancel_upload(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    await repo.uploads.cancel(_upload(request, repo)[0])
    return web.Response(status=204)


def _upload_response(
    request: web.Request, name: str, status: UploadStatus, code: int, algorithm: str
) -> web.Response:
    location = signed_upload_path(request, name, status.upload_id, algorithm)
    return web.Response(
        status=code,
        headers={
            "Location": url_for(request, location),
            "Range": range_header(status.size),
            "Docker-Upload-UUID": status.upload_id,
            "Content-Length": "0",
        },
    )


def _created(request: web.Request, name: str, descriptor: BlobDescriptor) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": url_for(request, f"/v2/{name}/blobs/{descriptor.digest}"),
            "Docker-Content-Digest": str(descriptor.digest),
            "Content-Length": "0",
        },
    )
