"""The HTTP server both services listen with: aiohttp's, minus the echo of bad requests.

When aiohttp's parser refuses a request (a header over ``max_field_size``, a request line
over ``max_line_size``, an invalid header or method), its ``RequestHandler.handle_error``
logs the exception at ERROR with a traceback and answers a ``text/plain`` 400 whose body
is the exception text. That text quotes up to 100 bytes of the offending line, and the
line that overflows is most often ``Authorization`` or ``Cookie``: a credential, written
to the log and reflected to whoever sent it. Neither service can see these requests in a
middleware (they never reach the application), so the answer is made here instead: one
WARNING line naming the client and the kind of error, and the JSON error envelope with a
fixed message. A request whose connection ended under its handler (a client that hung
up, or a handler closing on purpose after a partial response) is one INFO line: aiohttp
would log a 40-line traceback at ERROR for each, which any client can provoke at will.
Other errors keep aiohttp's handling.

A request body that cannot be read (a malformed chunked encoding, a body shorter than its
Content-Length, a bad ``Content-Encoding``, or no byte for ``http.bodytimeout``) raises
:class:`aiohttp.web.RequestPayloadError` in the handler that reads it;
:func:`unreadable_body` says what status and fixed description it gets.

aiohttp builds its ``RequestHandler`` inside ``web.Server.__call__`` and offers no option
to choose the class: ``shared.serving`` makes each connection's handler itself, a
subclass of :class:`QuietRequestHandler`; everything else is aiohttp's own.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from shared.client_address import client_address
from shared.errors import ErrorCode, RegistryError, error_envelope


class BodyTimeout(RequestPayloadError):
    """No byte of the request body arrived for ``http.bodytimeout`` while it was awaited."""


def unreadable_body(error: RequestPayloadError) -> tuple[int, str]:
    """The status and a fixed, one-line description of a body that could not be read.

    Never the error's own text: aiohttp's parser messages span lines.
    """
    if isinstance(error, BodyTimeout):
        return 408, "the request body stopped arriving"
    cause = error.__cause__
    kind = type(cause).__name__ if cause is not None else type(error).__name__
    return 400, f"unreadable request body ({kind})"


def _describe(error: HttpProcessingError) -> str:
    """A fixed description of a parser error: never its message, which quotes the request."""
    if isinstance(error, LineTooLong):
        return "a request line or header field over the size limit"
    if isinstance(error, BadHttpMessage):
        return f"malformed request ({type(error).__name__})"
    return f"unreadable request ({type(error).__name__})"


class QuietRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering parser errors without their content."""

    __slots__ = ("error_code",)

    def __init__(self, manager: web.Server, *, error_code: ErrorCode, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.error_code = error_code  # what the JSON body of a parser error names

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionResetError):
            return self._connection_ended(request, exc)
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        described = _describe(exc)
        self.logger.warning("refused a request from %s: %s", client_address(request), described)
        error = RegistryError(self.error_code, described, status=exc.code or 400)
        response = web.Response(
            status=error.status,
            body=json.dumps(error_envelope(error)).encode(),
            content_type="application/json",
        )
        response.force_close()  # the parser's state is unknown: never reuse the connection
        return response

    def _connection_ended(self, request: BaseRequest, exc: ConnectionResetError) -> web.Response:
        self.logger.info(
            "connection with %s ended during %s %s: %s",
            client_address(request),
            request.method,
            request.rel_url.path[:200],
            exc,
        )
        if request.writer.output_size > 0:
            # As aiohttp does: part of a response is out, so the connection must end here
            # (its request loop stops quietly on this).
            raise ConnectionError("the response was cut short")
        response = web.Response(status=400)  # no one is left to read it
        response.force_close()
        return response
