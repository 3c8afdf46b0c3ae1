"""The S3 driver's reads over plain HTTP (``s3_get.ObjectBody``): one object from an
offset, retried and resumed, served either as pieces (read ahead) or, when the caller
has a plain socket for the bytes, spliced into it inside the kernel (``splice``).

Resuming. A GET that fails is retried as the driver retries requests; one broken
mid-body is continued from where it stopped with ``Range`` and ``If-Match`` the ETag
first seen, so the rest comes from the same object or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from registry.storage.driver.base import PathNotFound, StorageUnavailable
from registry.storage.driver.readahead import read_ahead
from registry.storage.driver.s3_get import (
    READ_TIMEOUT,
    URL_SECONDS,
    ObjectBody,
    ReadBroken,
    Refused,
)
from registry.storage.driver.s3_retry import NOT_FOUND, is_transient_answer
from registry.storage.driver.splice import DestinationFailed, Pipe, SourceEnded
from registry.storage.socket_source import PiecesOnFirstUse

if TYPE_CHECKING:
    from registry.storage.driver.s3 import S3Driver

log = logging.getLogger("registry.storage.s3")


class DirectRead(PiecesOnFirstUse):
    """Object ``key`` from ``offset`` on: an async generator of its pieces, and a
    ``SocketSource`` (``send_into``). Either way, closing it closes its connection."""

    def __init__(self, driver: S3Driver, key: str, path: str, offset: int) -> None:
        self._driver = driver
        self._key = key
        self._path = path
        self.position = offset
        self._etag: str | None = None
        self._sending = False

    # --- as an async generator: the pieces, read ahead -----------------------------------

    def _make_pieces(self) -> AsyncGenerator[bytes, None]:
        if self._sending:
            raise RuntimeError("this read was sent into a socket")
        return read_ahead(self._read())

    async def _read(self) -> AsyncGenerator[bytes, None]:
        attempts = self._driver.retry.attempts
        for attempt in range(attempts):
            last = attempt + 1 >= attempts
            try:
                body = await self._open(last)
                if body is None:
                    return
                try:
                    async with contextlib.aclosing(body.pieces()) as pieces:
                        async for piece in pieces:
                            self.position += len(piece)
                            yield piece
                    return
                finally:
                    body.close()
            except ReadBroken as error:
                self._broken(error, last)
            await asyncio.sleep(self._driver.retry.backoff(attempt))

    # --- as a SocketSource: spliced ----------------------------------------------------

    async def send_into(self, out: socket.socket, count: int) -> None:
        """The next ``count`` bytes into ``out``: what came with the answer's head by
        ``send``, the rest moved by ``splice``, resumed like the pieces."""
        if self._pieces is not None:
            raise RuntimeError("this read was iterated")
        self._sending = True
        loop = asyncio.get_running_loop()
        sent = 0
        attempts = self._driver.retry.attempts
        with Pipe() as pipe:
            for attempt in range(attempts):
                last = attempt + 1 >= attempts
                try:
                    body = await self._open(last) if sent < count else None
                    if body is None:
                        break
                    try:
                        first = body.take_rest()[: count - sent]
                        try:
                            await loop.sock_sendall(out, first)
                        except OSError as error:
                            raise DestinationFailed(str(error)) from error
                        sent += len(first)
                        self.position += len(first)
                        assert body.length is not None  # open() refuses an answer without
                        want = min(count - sent, body.length - len(first))
                        try:
                            moved = await pipe.move(body.socket, out, want, READ_TIMEOUT)
                        except SourceEnded as ended:
                            sent += ended.moved
                            self.position += ended.moved
                            raise ReadBroken(str(ended)) from None
                        sent += moved
                        self.position += moved
                        break  # all asked for, or all the object had: shorter is an error
                    finally:
                        body.close()
                except ReadBroken as error:
                    self._broken(error, last)
                except DestinationFailed as error:
                    raise ConnectionResetError(f"blob transfer failed: {error}") from error
                await asyncio.sleep(self._driver.retry.backoff(attempt))
        if sent < count:
            raise ConnectionResetError("blob data ended early")

    # --- both ---------------------------------------------------------------------------

    async def _open(self, last: bool) -> ObjectBody | None:
        """The GET from ``position``, or None when that is the object's end. ReadBroken
        when it is worth another try (and this one is not the ``last``)."""
        headers = {"Accept-Encoding": "identity"}
        if self.position > 0:
            headers["Range"] = f"bytes={self.position}-"
        if self._etag is not None:
            headers["If-Match"] = self._etag
        s3 = await self._driver.s3()
        url = await s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._driver.bucket, "Key": self._key},
            ExpiresIn=URL_SECONDS,
        )
        try:
            body = await ObjectBody.open(url, headers)
        except Refused as refused:
            if refused.code in NOT_FOUND or (refused.status == 404 and not refused.code):
                raise PathNotFound(self._path) from None
            if refused.status == 416:
                return None  # the offset is at (or past) the end: nothing to read
            if last or not is_transient_answer(refused.status, refused.code):
                log.error(
                    "S3 GetObject failed: %s (HTTP %d)", refused.code or "error", refused.status
                )
                raise StorageUnavailable() from None
            raise ReadBroken(f"HTTP {refused.status}") from None
        if self.position > 0 and not body.headers.get("Content-Range", "").startswith(
            f"bytes {self.position}-"
        ):
            # A server that ignored the Range answered with the object from its start:
            # taken as the rest, the client would get the first bytes again.
            body.close()
            log.error("S3 GetObject from byte %d was not answered with that range", self.position)
            raise StorageUnavailable()
        self._etag = body.headers.get("ETag")
        return body

    @staticmethod
    def _broken(error: ReadBroken, last: bool) -> None:
        if last:
            log.error("S3 GetObject failed: %s", error)
            raise StorageUnavailable() from None
