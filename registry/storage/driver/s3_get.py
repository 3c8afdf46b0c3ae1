"""Streamed object reads from an S3 endpoint over plain HTTP, straight off the socket.

Why. A blob pulled through the registry from S3 cost the registry about 0.4 ms of CPU
per MB in aiohttp's client alone: its parser copies every buffer the socket delivers
into a new ``bytes``, and each then passes through its stream reader and botocore's body
wrapper. Here the GET's body is taken from the socket as ``recv`` returns it (about
0.2 ms per MB, the kernel's copy and little else), and nothing else touches it; or,
for a client on a plain socket, not taken at all but spliced from socket to socket
(``s3_direct``, ``splice``).

What it speaks. One ``GET`` of a URL presigned by botocore (the same SigV4 code as every
other request: only the ``host`` header is signed, so ``Range`` and ``If-Match`` may
be added), on a connection of its own closed after the body (``Connection: close``).
The answer must carry a ``Content-Length``, as every S3 ``GetObject`` does; a chunked
answer is refused. Error answers are read (bounded) for their S3 error code. TLS
endpoints and those reached through a proxy keep aiobotocore's client
(``direct_reads``, ``read_through_client``).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import re
import socket
import urllib.request
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError

from registry.storage.driver.base import PathNotFound, StorageUnavailable
from registry.storage.driver.s3_retry import NOT_FOUND, describe, error_code

if TYPE_CHECKING:
    from registry.storage.driver.s3 import S3Driver

log = logging.getLogger("registry.storage.s3")

# One recv at most (what asyncio's own transports read at once), never joined into larger
# pieces (a copy that cost more CPU than the fewer hand-overs saved): read-ahead holds
# DEPTH x 256 KiB = 4 MiB per pull at most. The same for aiohttp's buffers (TLS).
PIECE = 256 * 1024
HEAD_LIMIT = 64 * 1024  # status line and headers; an error body
READ_TIMEOUT = 60.0  # seconds without a byte, as botocore's default
URL_SECONDS = 300  # a read's presigned URL: used at once, signed anew for each try
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*")
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class ReadBroken(Exception):
    """The connection failed or ended before the body did: worth resuming."""


class Refused(Exception):
    """An answer other than the object's bytes: its status and S3 error code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(status, code)
        self.status = status
        self.code = code


def direct_reads(endpoint: str) -> bool:
    """Whether reads from ``endpoint`` may go straight off a socket: plain HTTP, no proxy."""
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    return "http" not in proxies or bool(urllib.request.proxy_bypass(parts.hostname))


class ObjectBody:
    """The answer to one GET: ``headers`` once open, then the body by ``pieces()``."""

    def __init__(self, sock: socket.socket, headers: http.client.HTTPMessage, rest: bytes):
        self._sock = sock
        self.headers = headers
        self._rest = rest
        length = headers.get("Content-Length", "")
        # None: no length given (or a chunked answer), which only an error answer may be.
        self.length: int | None = None
        if length.isascii() and length.isdigit() and not headers.get("Transfer-Encoding"):
            self.length = int(length)

    @classmethod
    async def open(cls, url: str, headers: dict[str, str]) -> ObjectBody:
        """Send the GET and read the head; ``Refused`` for an error answer."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        loop = asyncio.get_running_loop()
        sock = await _connect(parts.hostname or "", parts.port or 80)
        try:
            head = b""
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    await loop.sock_sendall(sock, request)
                    while (end := head.find(b"\r\n\r\n")) < 0:
                        if len(head) > HEAD_LIMIT:
                            raise ReadBroken("an S3 answer's head is too long")
                        received = await loop.sock_recv(sock, PIECE)
                        if not received:
                            raise ReadBroken("the connection closed before the answer")
                        head += received
            except (OSError, TimeoutError) as error:
                raise ReadBroken(type(error).__name__) from error
            status = _STATUS.fullmatch(head[: head.find(b"\r\n")])
            if status is None:
                raise ReadBroken("not an HTTP answer")
            try:
                fields = io.BytesIO(head[head.find(b"\r\n") + 2 : end + 4])
                message = http.client.parse_headers(fields)
            except http.client.HTTPException as error:  # too many or too long headers
                raise ReadBroken(type(error).__name__) from error
            body = cls(sock, message, head[end + 4 :])
            code = int(status.group(1))
            if code not in (200, 206):
                raise Refused(code, await body._error_code())
            if body.length is None:
                raise Refused(502, "NoContentLength")  # S3's GetObject always sends one
            return body
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    @property
    def socket(self) -> socket.socket:
        """The connection, for a body taken off it by other means than ``pieces()``."""
        return self._sock

    def take_rest(self) -> bytes:
        """The body's first bytes, received with the head (at most its length)."""
        rest, self._rest = self._rest[: self.length or 0], b""
        return rest

    async def _error_code(self) -> str:
        """The S3 error code of an error answer (its body is small XML), or ''."""
        if self.length is None or self.length > HEAD_LIMIT:
            return ""
        try:
            text = b"".join([piece async for piece in self.pieces()])
        except ReadBroken:
            return ""
        found = _CODE.search(text)
        return found.group(1).decode("ascii", "replace") if found else ""

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        """The body as received (at most ``PIECE`` bytes each); ``ReadBroken`` when it
        ends early. The connection is closed at the end, or when this is closed."""
        loop = asyncio.get_running_loop()
        remaining = self.length or 0
        try:
            if self._rest:
                first, self._rest = self._rest[:remaining], b""
                remaining -= len(first)
                yield first
            while remaining > 0:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        piece = await loop.sock_recv(self._sock, min(PIECE, remaining))
                except (OSError, TimeoutError) as error:
                    raise ReadBroken(type(error).__name__) from error
                if not piece:
                    raise ReadBroken("the connection closed mid-body")
                remaining -= len(piece)
                yield piece
        finally:
            self._sock.close()


async def _connect(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
    except (OSError, TimeoutError) as error:
        raise ReadBroken(type(error).__name__) from error
    return sock


async def read_through_client(
    driver: S3Driver, key: str, path: str, offset: int
) -> AsyncGenerator[bytes, None]:
    """Object ``key`` from ``offset`` on through aiobotocore's client (TLS, proxies): a GET
    retried as the driver retries requests, and one broken mid-body resumed from where it
    stopped, with ``IfMatch`` the ETag first seen (the same object or nothing)."""
    position = offset
    etag: str | None = None
    for attempt in range(driver.retry.attempts):
        arguments: dict[str, Any] = {"Bucket": driver.bucket, "Key": key}
        if position > 0:
            arguments["Range"] = f"bytes={position}-"
        if etag is not None:  # resuming: the same object or nothing
            arguments["IfMatch"] = etag
        try:
            response = await driver.call(
                "GetObject",
                lambda s3, a=arguments: s3.get_object(**a),  # type: ignore[misc]
                NOT_FOUND | {"InvalidRange"},
            )
        except ClientError as error:
            if error_code(error) == "InvalidRange":
                return  # the offset is at (or past) the end: nothing to read
            raise PathNotFound(path) from None
        etag = response.get("ETag")
        body = response["Body"]
        try:
            while chunk := await body.read(PIECE):
                position += len(chunk)
                yield chunk
            return
        except (
            ResponseStreamingError,
            IncompleteReadError,
            aiohttp.ClientPayloadError,  # what aiohttp raises for a body cut short
            TimeoutError,
        ) as error:
            # The connection broke mid-object: continue from where it stopped.
            if attempt + 1 >= driver.retry.attempts:
                log.error("S3 GetObject stream failed: %s", describe(error))
                raise StorageUnavailable() from error
            await asyncio.sleep(driver.retry.backoff(attempt))
        finally:
            body.close()
