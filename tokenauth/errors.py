"""tokenauth's wire errors: the shared table's envelope, plus OAuth2's ``error`` field.

Every error body is the registry envelope ``{"errors": [...]}`` that docker clients print;
answers to the OAuth2 endpoint also carry RFC 6749's ``error`` / ``error_description`` so
OAuth2 clients understand them too.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from shared.errors import UNKNOWN, ErrorCode, RegistryError, error_envelope

log = logging.getLogger(__name__)

# The shared table has no generic 400; this one is tokenauth's own.
INVALID_REQUEST = ErrorCode("INVALID_REQUEST", "invalid request", 400)


class TokenAuthError(RegistryError):
    """A :class:`RegistryError` that may also name an OAuth2 error code."""

    def __init__(
        self,
        error: ErrorCode,
        message: str | None = None,
        *,
        oauth: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(error, message, headers=headers, status=status)
        self.oauth = oauth


def render(error: RegistryError, *, oauth: bool) -> web.Response:
    body: dict[str, Any] = error_envelope(error)
    code = getattr(error, "oauth", None)
    if oauth and code:
        body.update(error=code, error_description=error.message)
    headers = {"Cache-Control": "no-store", **error.headers}
    return web.Response(
        status=error.status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`RegistryError` and unexpected failures as JSON error bodies."""
    try:
        return await handler(request)
    except RegistryError as error:
        return render(error, oauth=request.method == "POST")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return render(RegistryError(UNKNOWN), oauth=False)
