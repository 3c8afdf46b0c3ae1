"""An access line's ``http.response.written`` (body bytes sent): read off aiohttp's state
for a ``web.Response`` sent whole, worked out from the head (``body_bytes``) otherwise;
both the same number, response by response, over a real server."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_request import BaseRequest

from shared import access_log
from shared.access_log import AccessLogger, _capture, body_bytes

AiohttpServer = Callable[..., Coroutine[Any, Any, TestServer]]
BODY = b'{"schemaVersion": 2, "layers": []}' * 3


class Seen:
    """Each response's (method, path, captured bytes written, body_bytes' count)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, int]] = []


SEEN = web.AppKey("seen", Seen)


class Comparing(AccessLogger):
    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        captured = _capture(request, response, time, None, None)
        measured = body_bytes(response.reason, response.headers, response.body_length)
        assert isinstance(request, web.Request)  # every request here reaches the app
        seen = request.app[SEEN]
        seen.rows.append((request.method, request.path, captured[8], measured))


async def whole(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})


async def text(request: web.Request) -> web.Response:
    return web.Response(text="héllo wörld", reason="Fine")


async def empty(request: web.Request) -> web.Response:
    return web.Response()


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def not_modified(request: web.Request) -> web.Response:
    return web.Response(status=304, headers={"ETag": '"x"', "Content-Length": str(len(BODY))})


async def accepted(request: web.Request) -> web.Response:
    return web.Response(status=202, headers={"Content-Length": "0"})


async def compressed(request: web.Request) -> web.Response:
    response = web.Response(body=BODY * 50)
    response.enable_compression()
    return response


async def payload(request: web.Request) -> web.Response:
    return web.Response(body=io.BytesIO(BODY))


async def json_body(request: web.Request) -> web.Response:
    return web.json_response({"tags": ["a", "b"]})


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="no such thing")


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(BODY)
    await response.write(BODY[:7])
    return response


async def streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = len(BODY)
    await response.prepare(request)
    await response.write(BODY)
    return response


def _app(seen: Seen) -> web.Application:
    app = web.Application()
    app[SEEN] = seen
    for path, handler in [
        ("/whole", whole),
        ("/text", text),
        ("/empty", empty),
        ("/no-content", no_content),
        ("/not-modified", not_modified),
        ("/accepted", accepted),
        ("/compressed", compressed),
        ("/payload", payload),
        ("/json", json_body),
        ("/missing", missing),
        ("/chunked", chunked),
        ("/streamed", streamed),
    ]:
        app.router.add_get(path, handler)  # and HEAD
    return app


async def _server(aiohttp_server: AiohttpServer, seen: Seen) -> TestServer:
    logger = logging.getLogger("test_access_written.access")
    logger.setLevel(logging.INFO)
    server: TestServer = await aiohttp_server(
        _app(seen), access_log=logger, access_log_class=Comparing
    )
    return server


async def test_bytes_written_are_what_the_head_gives(aiohttp_server: AiohttpServer) -> None:
    seen = Seen()
    server = await _server(aiohttp_server, seen)
    paths = [
        "/whole", "/text", "/empty", "/no-content", "/not-modified", "/accepted",
        "/compressed", "/payload", "/json", "/missing", "/chunked", "/streamed",
    ]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for path in paths:
            # A StreamResponse writes what its handler writes, a HEAD's too: not asked.
            stream = path in ("/chunked", "/streamed")
            for method in ("GET",) if stream else ("GET", "HEAD"):
                headers = {"Accept-Encoding": "gzip"} if path == "/compressed" else {}
                async with session.request(method, server.make_url(path), headers=headers):
                    pass
    # An HTTP/1.0 request, from a raw client.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /whole HTTP/1.0\r\n\r\n")
    await reader.read()
    writer.close()
    await writer.wait_closed()
    await server.close()
    rows = seen.rows
    assert len(rows) == 2 * len(paths) - 2 + 1
    assert [row for row in rows if row[2] != row[3]] == []
    by_request = {(method, path): captured for method, path, captured, _ in rows}
    assert by_request["GET", "/whole"] == len(BODY)
    assert by_request["HEAD", "/whole"] == 0
    assert by_request["GET", "/text"] == len("héllo wörld".encode())
    assert by_request["GET", "/chunked"] > len(BODY) + 7  # the chunks' framing counts
    assert 0 < by_request["GET", "/compressed"] < len(BODY * 50)


async def test_a_whole_response_is_not_measured_from_its_head(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head's measure (a join of every header name and value, a tenth of an access
    line) is left for the responses whose body aiohttp's state does not give."""
    measured: list[int] = []
    original = access_log.body_bytes

    def counting(reason: str, headers: Any, body_length: int) -> int:
        measured.append(body_length)
        return original(reason, headers, body_length)

    seen = Seen()
    server = await _server(aiohttp_server, seen)
    monkeypatch.setattr(access_log, "body_bytes", counting)
    async with aiohttp.ClientSession() as session:
        for path in ("/whole", "/no-content", "/json", "/empty"):
            for method in ("GET", "HEAD"):
                async with session.request(method, server.make_url(path)):
                    pass
        assert measured == []
        async with session.get(server.make_url("/chunked")) as response:
            await response.read()
    await server.close()
    assert len(measured) == 1
