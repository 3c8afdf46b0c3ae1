"""What every handler needs: its repository, validated URL parts, request bodies and
headers parsed strictly, and URLs for ``Location``."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from registry.keys import CONFIG, ROUTE, STORAGE
from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage.errors import ManifestUnknown
from registry.storage.registry import Repository
from registry.urls import base_url, path_prefix
from shared import errors
from shared.client_address import client_address
from shared.errors import ErrorCode, RegistryError
from shared.http_server import unreadable_body
from shared.reference import is_valid_name, is_valid_tag

log = logging.getLogger("registry")

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")


def repository(request: web.Request) -> Repository:
    return request.app[STORAGE].repository(request[ROUTE].name)


def route_param(request: web.Request, key: str) -> str:
    return request[ROUTE].params[key]


def digest_param(value: str | None, what: str = "digest") -> Digest:
    if value is None:
        raise RegistryError(errors.DIGEST_INVALID, f"{what} is missing")
    try:
        return parse_digest(value)
    except InvalidDigest as error:
        raise RegistryError(errors.DIGEST_INVALID, str(error)) from None


def reference_param(value: str, for_write: bool = False) -> Digest | str:
    """A manifest reference: a digest when it has a colon, otherwise a tag.

    A malformed tag cannot name anything stored, so reading it is MANIFEST_UNKNOWN (404,
    as the conformance suite expects); writing it is TAG_INVALID (400).
    """
    if ":" in value:
        return digest_param(value, "reference")
    if not is_valid_tag(value):
        if for_write:
            raise RegistryError(errors.TAG_INVALID, "invalid tag", detail={"tag": value[:200]})
        raise ManifestUnknown(value)
    return value


def name_param(value: str | None, what: str) -> str:
    if value is None or not is_valid_name(value):
        raise RegistryError(errors.NAME_INVALID, f"invalid {what}", detail={what: str(value)[:300]})
    return value


def page_size(request: web.Request, default: int | None, maximum: int | None) -> int | None:
    raw = request.query.get("n")
    if raw is None or raw == "":
        return default
    # isdigit() alone lets other scripts' digits and superscripts through ("²"), which
    # int() refuses or reads as another number.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise RegistryError(errors.PAGINATION_NUMBER_INVALID, detail={"n": raw[:20]})
    value = int(raw)
    if maximum is not None and value > maximum:
        # As Distribution: a page larger than the bound is refused, not silently cut.
        raise RegistryError(
            errors.PAGINATION_NUMBER_INVALID,
            f"n must be at most {maximum}",
            detail={"n": raw},
        )
    return value


def declared_length(request: web.Request) -> int | None:
    """Content-Length, strictly parsed (None for a chunked body)."""
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise RegistryError(errors.SIZE_INVALID, "invalid Content-Length")
    return int(raw)


def content_range(request: web.Request) -> tuple[int, int] | None:
    """The ``start-end`` of a chunk (inclusive), validated against its length."""
    raw = request.headers.get("Content-Range")
    if raw is None:
        return None
    found = _CONTENT_RANGE.fullmatch(raw.strip())
    if found is None:
        raise RegistryError(errors.RANGE_INVALID, "invalid Content-Range", status=416)
    start, end = int(found.group(1)), int(found.group(2))
    if end < start:
        raise RegistryError(errors.RANGE_INVALID, "Content-Range ends before it starts", status=416)
    length = declared_length(request)
    if length is not None and length != end - start + 1:
        raise RegistryError(
            errors.SIZE_INVALID, "Content-Range does not match Content-Length", status=416
        )
    return start, end


def has_body(request: web.Request) -> bool:
    return request.body_exists and declared_length(request) != 0


async def body_chunks(
    request: web.Request, code: ErrorCode = errors.BLOB_UPLOAD_INVALID
) -> AsyncIterator[bytes]:
    """The body as it arrives, stored as sent (the server does not decode a
    Content-Encoding). One that cannot be read is ``code``, 400 (408 if it stopped
    arriving): one log line, no traceback."""
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except RequestPayloadError as error:
        status, description = unreadable_body(error)
        log.info(
            "%s %s from %s: %s",
            request.method,
            request.rel_url.path,
            client_address(request),
            description,
        )
        raise RegistryError(code, description, status=status) from None


async def read_bounded(request: web.Request, limit: int, code: ErrorCode) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` before or while reading;
    an unreadable body is ``code`` as in :func:`body_chunks`."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise RegistryError(errors.SIZE_TOO_LARGE, f"body exceeds {limit} bytes", status=413)
    parts: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request, code):
        size += len(chunk)
        if size > limit:
            raise RegistryError(errors.SIZE_TOO_LARGE, f"body exceeds {limit} bytes", status=413)
        parts.append(chunk)
    return b"".join(parts)


def url_for(request: web.Request, path: str) -> str:
    """An absolute (or, with ``relativeurls``, relative) URL of a /v2/ path."""
    config = request.app[CONFIG]
    return f"{base_url(request, config)}{path_prefix(config)}{path}"
