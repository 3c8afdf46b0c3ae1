"""Blob endpoints: ``HEAD``/``GET``/``DELETE /v2/<name>/blobs/<digest>``."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from aiohttp import web

from registry.handlers.base import digest_param, repository, route_param
from registry.handlers.live_blobs import send_live_body
from registry.handlers.sendfile import send_file
from registry.handlers.socket_stream import stream_pieces
from registry.keys import CONFIG, MIRRORS
from registry.notifications import bridge
from registry.proxy.mirror import LiveBlob
from registry.response_headers import prepare
from registry.storage.blobs import BlobDescriptor, LocalBlob, RedirectedBlob
from shared import errors
from shared.access_log import add_log_fields
from shared.errors import RegistryError


async def head_blob(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    digest = digest_param(route_param(request, "digest"))
    mirror = request.app[MIRRORS].for_name(repo.name)
    if mirror is None:
        # A HEAD is how a pushing client decides to skip an upload: ``check`` protects
        # the blob from garbage collection for the grace period.
        descriptor = await repo.blobs.check(digest)
    else:
        descriptor = await mirror.blob_descriptor(repo, digest)
    if _not_modified(request, descriptor):
        return _not_modified_response(descriptor)
    response = web.StreamResponse(headers=_blob_headers(descriptor))
    response.content_length = descriptor.size
    return response


async def get_blob(request: web.Request) -> web.StreamResponse:
    repo = repository(request)
    blobs = repo.blobs
    digest = digest_param(route_param(request, "digest"))
    mirror = request.app[MIRRORS].for_name(repo.name)
    if mirror is None:
        descriptor = await blobs.stat(digest)
    else:
        found = await mirror.blob(repo, digest, whole="Range" not in request.headers)
        if isinstance(found, LiveBlob):
            return await _send_live(request, repo.name, found)
        descriptor = found
    # A current cached copy outranks the range, as in Go's http.ServeContent (Distribution).
    not_modified = _not_modified(request, descriptor)
    requested = None if not_modified else _requested_range(request, descriptor)
    start, count = requested or (0, descriptor.size)
    source = await blobs.open(descriptor, start, request.method)
    bridge.blob_pulled(request, repo.name, descriptor)
    if isinstance(source, RedirectedBlob):  # opt-in: storage.redirect.enabled
        raise web.HTTPTemporaryRedirect(source.url, headers=_blob_headers(descriptor))
    if not_modified:
        return _not_modified_response(descriptor)
    response = web.StreamResponse(headers=_blob_headers(descriptor))
    response.content_length = count
    if requested is not None:
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{descriptor.size}"
    try:
        if isinstance(source, LocalBlob):
            await _sendfile(request, response, source.path, start, count)
        else:
            # Closed however the transfer ends, a client leaving mid-pull included: an
            # open reader holds a backend connection (and S3's read-ahead) until closed,
            # and left to the garbage collector that can be minutes.
            async with contextlib.aclosing(source.chunks) as chunks:
                await stream_pieces(request, response, chunks, count)
    except Exception as error:
        if response.prepared:
            raise _cut_short(request, error) from error
        raise
    return response


async def _send_live(request: web.Request, name: str, blob: LiveBlob) -> web.StreamResponse:
    """An uncached blob of a mirrored repository, as it arrives from upstream."""
    bridge.blob_pulled(request, name, blob.descriptor)
    response = web.StreamResponse(headers=_blob_headers(blob.descriptor))
    response.content_length = blob.descriptor.size
    try:
        await send_live_body(request, response, blob)
    except Exception as error:
        if response.prepared:
            raise _cut_short(request, error) from error
        raise
    return response


def _cut_short(request: web.Request, error: Exception) -> ConnectionResetError:
    """What a transfer that failed after its status line went out raises: an error body
    is impossible then and a client waiting for the rest would hang, so the connection
    is ended and the client sees the transfer fail. (A failure before the status line
    goes out as it is: the error middleware renders it.) Not a context manager: the
    generator one cost every pull a few Python calls."""
    if request.transport is not None:
        request.transport.close()
    return ConnectionResetError(f"blob transfer failed: {error}")


async def delete_blob(request: web.Request) -> web.StreamResponse:
    if not request.app[CONFIG].storage.delete.enabled:
        raise RegistryError(errors.UNSUPPORTED, "deletion is disabled", status=405)
    repo = repository(request)
    digest = digest_param(route_param(request, "digest"))
    await repo.blobs.unlink(digest)
    bridge.deleted(request, repo.name, digest=str(digest))
    return web.Response(status=202, headers={"Content-Length": "0"})


def _blob_headers(descriptor: BlobDescriptor) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": str(descriptor.digest),
        "ETag": _etag(descriptor),
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


def _etag(descriptor: BlobDescriptor) -> str:
    return f'"{descriptor.digest}"'


def _not_modified(request: web.Request, descriptor: BlobDescriptor) -> bool:
    """Whether ``If-None-Match`` names the blob (or is ``*``): a client's cached copy is
    current. Compared weakly, as RFC 9110 says for this header, like Distribution's
    ``http.ServeContent``; a header that does not parse matches nothing."""
    try:
        tags = request.if_none_match
    except ValueError:
        return False
    return tags is not None and any(t.value in ("*", str(descriptor.digest)) for t in tags)


def _not_modified_response(descriptor: BlobDescriptor) -> web.Response:
    """304: the validators and caching headers of a 200, no body and no Content-Type."""
    headers = _blob_headers(descriptor)
    del headers["Content-Type"]
    return web.Response(status=304, headers=headers)


# One byte range (RFC 9110 14.1.2), read as aiohttp's ``request.http_range`` reads it
# (which compiles and runs a regular expression and builds a slice on every request);
# several ranges, or any other unit, match nothing.
_BYTE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII | re.IGNORECASE)
# Positions of more digits than this are read as "beyond any blob" (an exabyte) without
# being converted: a client controls their length, and int() refuses over 4,300 digits.
_MAX_DIGITS = 18
_BEYOND = 10**_MAX_DIGITS


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND


def _requested_range(request: web.Request, descriptor: BlobDescriptor) -> tuple[int, int] | None:
    """(start, count) of a single-range request, None for the whole blob; 416 when it
    cannot be satisfied. An ``If-Range`` other than the blob's strong ETag asks for the
    whole blob (a blob has no modification date to compare a date with)."""
    size = descriptor.size
    headers = request.headers
    header = headers.get("Range")
    if header is None:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None and if_range.strip() != _etag(descriptor):
        return None
    matched = _BYTE_RANGE.match(header)
    if matched is None:
        raise _unsatisfiable(size)
    first, last = matched.groups()
    if first:
        start = _position(first)
        stop = size
        if last:
            end = _position(last)
            if end < start:
                raise _unsatisfiable(size)
            stop = min(end + 1, size)
    elif last:  # a suffix range: the last N bytes ("-0" reads as "0-", as aiohttp has it)
        suffix = _position(last)
        start, stop = (max(size - suffix, 0), size) if suffix else (0, size)
    else:
        raise _unsatisfiable(size)
    if start >= size or stop <= start:
        raise _unsatisfiable(size)
    return start, stop - start


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(
        errors.RANGE_INVALID,
        "requested range not satisfiable",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _sendfile(
    request: web.Request, response: web.StreamResponse, path: Path, start: int, count: int
) -> None:
    """Send ``count`` bytes of ``path`` from ``start`` with the kernel's sendfile."""
    try:
        # Opened and closed inline: a microsecond's work, and no handle can leak if the
        # request is cancelled between a thread hop and its completion. Unbuffered: the
        # kernel reads the file, and a buffered reader costs a terminal check and a seek.
        handle = path.open("rb", buffering=0)
    except FileNotFoundError:
        # Deleted between stat and open (garbage collection): report it as unknown.
        raise RegistryError(errors.BLOB_UNKNOWN) from None
    try:
        if request.method == "HEAD":
            await prepare(request, response)
        else:
            sent = await send_file(request, response, handle, start, count)
            # The kernel's bytes bypass aiohttp's writer, which counts the access line's.
            add_log_fields(request, {"http.response.written": sent})
        await response.write_eof()
    finally:
        handle.close()
