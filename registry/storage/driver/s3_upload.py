"""Writing S3 objects: one multipart upload, and the driver's file writer built on it.

Versions. On S3 the last complete write of an object wins, so two writers appending to
the same object at once (two instances given chunks at the same offset of one upload)
each build on the same base and one replaces the other. Each write therefore stores a
random version in the object's own metadata (``x-amz-meta-portside-version``), set in
the same request that creates the object (PUT, or the multipart upload's creation), so
that it names exactly those bytes on every S3 implementation (ETags are MD5s: two bodies
can be made to share one). A writer reports the version it appends to: the one the GET
of a small object returned with its bytes, or, for a large one copied within S3, the one
a HEAD saw both before and after the copy (any write in between would have changed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from registry.storage.driver.base import (
    FileWriter,
    PathNotFound,
    SizeInvalid,
    StorageUnavailable,
)
from registry.storage.driver.s3_parts import PartBody, PartBuffer
from registry.storage.s3_settings import S3_MAX_PART, S3_MIN_PART

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

    from registry.storage.driver.s3 import S3Driver

log = logging.getLogger("registry.storage.s3")

MAX_PARTS = 10_000
# A copy's source gone (another finisher moved it) or not the object named (412).
COPY_REFUSED = frozenset({"NoSuchKey", "NotFound", "404", "PreconditionFailed", "412"})
VERSION_KEY = "portside-version"  # user metadata: x-amz-meta-portside-version
_VERSION = re.compile(r"[0-9a-f]{32}")


def new_version() -> str:
    """A version for the object about to be written (unique: 128 random bits)."""
    return secrets.token_hex(16)


def version_of(response: Mapping[str, Any] | None) -> str | None:
    """The version of the object a HEAD or GET answered with; None without one."""
    if response is None:
        return None
    version = response.get("Metadata", {}).get(VERSION_KEY)
    # Only what a writer of ours stores (anyone with access to the bucket may set others).
    return version if isinstance(version, str) and _VERSION.fullmatch(version) else None


class MultipartUpload:
    """One S3 multipart upload to ``key``: parts in order, then complete or abort."""

    def __init__(self, driver: S3Driver, key: str, upload_id: str) -> None:
        self.driver = driver
        self.key = key
        self.upload_id = upload_id
        self.parts: dict[int, str] = {}

    @classmethod
    async def create(
        cls, driver: S3Driver, key: str, metadata: dict[str, str] | None = None
    ) -> MultipartUpload:
        response = await driver.call(
            "CreateMultipartUpload",
            lambda s3: s3.create_multipart_upload(
                Bucket=driver.bucket,
                Key=key,
                ContentType="application/octet-stream",
                Metadata=metadata or {},
                **driver.write_args,
            ),
        )
        return cls(driver, key, response["UploadId"])

    async def upload_part(self, number: int, data: PartBody) -> None:
        response = await self.driver.call(
            "UploadPart",
            lambda s3: s3.upload_part(
                Bucket=self.driver.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,  # type: ignore[arg-type]  # botocore takes anything with read()
            ),
        )
        self.parts[number] = response["ETag"]

    async def copy_part(
        self, number: int, source: str, start: int, stop: int, *, if_match: str | None = None
    ) -> None:
        """Part ``number`` is bytes [start, stop) of object ``source``, copied server-side;
        with ``if_match``, only from the object with that ETag (else a ClientError)."""
        condition = {"CopySourceIfMatch": if_match} if if_match else {}
        refused = COPY_REFUSED if if_match else frozenset[str]()
        response = await self.driver.call(
            "UploadPartCopy",
            lambda s3: s3.upload_part_copy(
                Bucket=self.driver.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.driver.bucket, "Key": source},
                CopySourceRange=f"bytes={start}-{stop - 1}",
                **condition,  # type: ignore[arg-type]
            ),
            refused,
        )
        self.parts[number] = response["CopyPartResult"]["ETag"]

    async def complete(self, size: int) -> None:
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": n, "ETag": etag} for n, etag in sorted(self.parts.items())
        ]
        try:
            await self.driver.call(
                "CompleteMultipartUpload",
                lambda s3: s3.complete_multipart_upload(
                    Bucket=self.driver.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},
                ),
                frozenset({"NoSuchUpload"}),
            )
        except ClientError:
            # A retry after a completion whose answer was lost: done if the object is there.
            head = await self.driver.head(self.key)
            if head is None or int(head["ContentLength"]) != size:
                log.error("S3 multipart upload to %s vanished before completion", self.key)
                raise StorageUnavailable() from None

    async def abort(self) -> None:
        """Best effort: an upload left behind is aborted when its directory is deleted."""
        with contextlib.suppress(Exception):
            await asyncio.shield(
                self.driver.call(
                    "AbortMultipartUpload",
                    lambda s3: s3.abort_multipart_upload(
                        Bucket=self.driver.bucket, Key=self.key, UploadId=self.upload_id
                    ),
                    frozenset({"NoSuchUpload"}),
                )
            )


async def multipart_copy(driver: S3Driver, src: str, dst: str, size: int, etag: str | None) -> None:
    """Copy a large object server-side, ``multipartcopymaxconcurrency`` parts at once;
    every part of the object with ``etag`` when given (a ClientError if it is gone)."""
    part = max(driver.config.multipartcopychunksize, -(-size // MAX_PARTS))
    upload = await MultipartUpload.create(driver, dst)
    try:
        limit = asyncio.Semaphore(driver.config.multipartcopymaxconcurrency)
        refused: list[ClientError] = []

        async def copy(number: int, start: int) -> None:
            async with limit:
                if refused:
                    return
                try:
                    stop = min(start + part, size)
                    await upload.copy_part(number, src, start, stop, if_match=etag)
                except ClientError as error:  # refused: not an ExceptionGroup
                    refused.append(error)

        async with asyncio.TaskGroup() as group:
            for number, start in enumerate(range(0, size, part), start=1):
                group.create_task(copy(number, start))
        if refused:
            raise refused[0]
        await upload.complete(size)
    except BaseException:
        await upload.abort()
        raise


class S3Writer(FileWriter):
    """Buffers up to ``chunksize`` and sends full parts, one at a time in the background
    while the next fills (memory: about two parts); ``close`` leaves one complete object
    (see the module docstring). After a failed write, ``close`` aborts instead:
    completing would commit a file with a piece missing."""

    def __init__(
        self,
        driver: S3Driver,
        key: str,
        *,
        copy_size: int,
        initial: bytes = b"",
        base_version: str | None,
        dirty: bool = False,
    ) -> None:
        self._driver = driver
        self._key = key
        self._base_version = base_version
        self._version = new_version()  # of what close() stores, if anything
        self._copy_size = copy_size  # the existing object, to be copied as the first parts
        # The part being filled (``initial``: a small object's bytes to append to) and the
        # one being uploaded: two parts of memory at most, each filled once per part.
        self._filling = PartBuffer(driver.config.chunksize, initial)
        self._sending: PartBuffer | None = None
        self._size = copy_size + len(initial)
        self._dirty = dirty  # something to store at close
        self._upload: MultipartUpload | None = None
        self._next_part = 1
        self._inflight: asyncio.Future[None] | None = None
        self._failed = False
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def base_version(self) -> str | None:
        return self._base_version

    @property
    def version(self) -> str | None:
        return self._version if self._dirty else self._base_version

    async def write(self, data: bytes) -> None:
        if self._failed or self._closed:
            raise ValueError("write to a failed or closed S3 writer")
        self._size += len(data)
        self._dirty = self._dirty or bool(data)
        view = memoryview(data)
        try:
            while view:
                view = view[self._filling.fill(view) :]
                if self._filling.full:
                    await self._send()
        except BaseException:
            self._failed = True
            raise

    async def _settle(self) -> None:
        """Wait for the part in flight; its failure is the writer's."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _send(self) -> None:
        """Upload the filled part in the background; the buffer of the part before it
        (uploaded by now) is the next one to fill."""
        await self._settle()  # at most one part in flight
        if self._upload is None:
            metadata = {VERSION_KEY: self._version}
            self._upload = await MultipartUpload.create(self._driver, self._key, metadata)
            # The object so far becomes the first parts, copied within S3 (<= 5 GiB each).
            pieces = -(-self._copy_size // S3_MAX_PART)
            for index in range(pieces):
                start = self._copy_size * index // pieces
                stop = self._copy_size * (index + 1) // pieces
                await self._upload.copy_part(index + 1, self._key, start, stop)
            if pieces:
                # Another writer may have replaced the object since it was looked at: the
                # parts are then of a version no one can name (see the module docstring).
                head = await self._driver.head(self._key)
                if version_of(head) != self._base_version:
                    self._base_version = None
            self._next_part = pieces + 1
        number, self._next_part = self._next_part, self._next_part + 1
        if number > MAX_PARTS:
            limit = MAX_PARTS * self._driver.config.chunksize
            raise SizeInvalid(f"S3 uploads are limited to {limit} bytes")
        body = self._filling.body()
        spare = self._sending
        self._sending = self._filling
        chunk = self._driver.config.chunksize
        self._filling = spare.reset() if spare is not None else PartBuffer(chunk)
        self._inflight = asyncio.ensure_future(self._upload.upload_part(number, body))

    async def _abort(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(BaseException):
                await self._inflight
            self._inflight = None
        if self._upload is not None:
            await self._upload.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._failed:
                raise _Aborted
            if self._upload is None and not self._dirty:
                return  # nothing appended: the object stays as it was
            if self._upload is None and self._copy_size == 0:
                body = self._filling.body()
                await self._driver.call(
                    "PutObject",
                    lambda s3: s3.put_object(
                        Bucket=self._driver.bucket,
                        Key=self._key,
                        Body=body,  # type: ignore[arg-type]  # anything with read()
                        Metadata={VERSION_KEY: self._version},
                        **self._driver.write_args,
                    ),
                )
                return
            if self._filling.filled or self._upload is None:
                await self._send()  # the last part may be short
            await self._settle()
            assert self._upload is not None
            await self._upload.complete(self._size)
        except _Aborted:
            await self._abort()
        except BaseException:
            await self._abort()
            raise
        finally:
            self._sending = None


class _Aborted(Exception):
    """Internal: close after a failed write."""


async def open_writer(
    driver: S3Driver, key: str, append: bool, *, existing: str | None = None
) -> S3Writer:
    """A writer of ``key``; appending, it continues the object there, with its version.
    ``existing`` (the driver path of ``key``): appending only to an object that is
    there, PathNotFound naming it otherwise (the HEAD made anyway tells)."""
    if not append:
        return S3Writer(driver, key, copy_size=0, base_version=None, dirty=True)
    head = await driver.head(key)
    if head is None and existing is not None:
        raise PathNotFound(existing)
    size = int(head["ContentLength"]) if head else 0
    if 0 < size < S3_MIN_PART:
        # Too small to be a part of its own: it joins the buffer (at most 5 MiB), with the
        # version of exactly the bytes read.
        fetched = await driver.fetch(key)
        if fetched is not None:
            content, version = fetched
            return S3Writer(driver, key, copy_size=0, initial=content, base_version=version)
        if existing is not None:
            raise PathNotFound(existing)  # deleted since the HEAD
        size, head = 0, None
    return S3Writer(driver, key, copy_size=size, base_version=version_of(head))
