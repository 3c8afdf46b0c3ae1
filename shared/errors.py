"""The wire error model: one table of error codes with their HTTP status, one envelope.

Every error a client sees is rendered from this table as
``{"errors": [{"code": ..., "message": ..., "detail": ...}]}`` (OCI distribution-spec,
"Error Codes"), so a status can never drift from its code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One code of the spec's table: its exact string, default message and HTTP status."""

    code: str
    message: str
    status: int


BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", "blob unknown to registry", 404)
BLOB_UPLOAD_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", "blob upload invalid", 400)
BLOB_UPLOAD_UNKNOWN = ErrorCode("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", "provided digest did not match uploaded content", 400)
# 400, not the 404 of the spec's table: the request (the manifest) is what is wrong, and
# Distribution, zot and Docker Hub all answer 400, which is what clients expect.
MANIFEST_BLOB_UNKNOWN = ErrorCode(
    "MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", 400
)
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", "manifest invalid", 400)
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", "manifest unknown to registry", 404)
NAME_INVALID = ErrorCode("NAME_INVALID", "invalid repository name", 400)
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", "repository name not known to registry", 404)
SIZE_INVALID = ErrorCode("SIZE_INVALID", "provided length did not match content length", 400)
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", "authentication required", 401)
DENIED = ErrorCode("DENIED", "requested access to the resource is denied", 403)
UNSUPPORTED = ErrorCode("UNSUPPORTED", "the operation is unsupported", 405)
TOOMANYREQUESTS = ErrorCode("TOOMANYREQUESTS", "too many requests", 429)
# Distribution's own codes, which clients of the reference registry already know.
PAGINATION_NUMBER_INVALID = ErrorCode(
    "PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400
)
RANGE_INVALID = ErrorCode("RANGE_INVALID", "invalid content range", 416)
TAG_INVALID = ErrorCode("TAG_INVALID", "manifest tag did not match URI", 400)
UNAVAILABLE = ErrorCode("UNAVAILABLE", "service unavailable", 503)
# portside's own: Distribution has no code for a full disk and answers 500 UNKNOWN, which
# tells nobody what to fix. 507 Insufficient Storage is HTTP's status for exactly this
# (MinIO answers it too); clients print the message, which says what happened.
STORAGE_FULL = ErrorCode(
    "STORAGE_FULL", "the registry's storage is full: no space left to store this", 507
)
UNKNOWN = ErrorCode("UNKNOWN", "unknown error", 500)
METHOD_UNKNOWN = ErrorCode("METHOD_UNKNOWN", "the method is not allowed for this resource", 405)
SIZE_TOO_LARGE = ErrorCode("SIZE_INVALID", "request body too large", 413)


class RegistryError(Exception):
    """An error destined for the client, rendered by the error middleware.

    ``status`` overrides the code's default status where the spec pairs one code with
    several statuses (e.g. BLOB_UPLOAD_INVALID as 416 for an out-of-order chunk).
    """

    def __init__(
        self,
        error: ErrorCode,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or error.message)
        self.error = error
        self.message = message or error.message
        self.detail = detail
        self.status = status if status is not None else error.status
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self)


def error_envelope(*errors: RegistryError) -> dict[str, Any]:
    """The spec's JSON body for one or more errors."""
    return {
        "errors": [{"code": e.error.code, "message": e.message, "detail": e.detail} for e in errors]
    }


def error_body(*errors: RegistryError) -> bytes:
    return json.dumps(error_envelope(*errors)).encode()
