"""The S3 driver: Distribution's layout as objects in one bucket, through aiobotocore
(the asynchronous botocore that aioboto3 wraps; the driver needs only its client).

A path ``/docker/registry/v2/...`` is the key ``<rootdirectory>/docker/registry/v2/...``,
as with Distribution's S3 driver, so an existing bucket keeps working. Directories are
key prefixes. S3 replaces an object atomically, so readers see the old or the new content.

Writers and several instances. The storage layer stats and re-reads upload data between
requests, and any instance may serve the next request of an upload. S3 can neither read
nor stat the parts of an unfinished multipart upload, so every ``close()`` leaves one
complete object: data is buffered (at most ``chunksize``) and sent as parts of a
multipart upload, a short tail as the last part, or as a single PUT when the whole file
is small. An append continues from that object: a small one (under S3's 5 MiB part
minimum) is read back into the buffer, a larger one becomes the first part of the next
multipart upload by a server-side copy, so the bytes never pass through the registry
again. A failed or abandoned multipart upload changes nothing visible; ``delete`` aborts
the ones under the deleted prefix.

Failures. Throttling, 5xx and broken connections are retried with exponential backoff
and jitter; what keeps failing (or any other S3 error) is logged and becomes a 503
``UNAVAILABLE`` for the client. Nothing half-written becomes visible: an object is only
ever replaced by a PUT, a completed multipart upload or a copy, each atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ResponseStreamingError,
)

from registry.config import S3_MAX_PART, S3_MIN_PART, S3DriverConfig
from registry.storage.driver.base import FileInfo, FileWriter, PathNotFound, StorageDriver
from shared import errors
from shared.errors import RegistryError

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("registry.storage.s3")

T = TypeVar("T")
READ_CHUNK = 1024 * 1024
PRESIGNED_SECONDS = 20 * 60  # as Distribution
MAX_PARTS = 10_000
DELETE_BATCH = 1000
NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)


class StorageUnavailable(RegistryError):
    """S3 kept failing: the request is refused with 503 and changed nothing visible."""

    def __init__(self) -> None:
        super().__init__(
            errors.UNAVAILABLE, "the storage backend is unavailable", headers={"Retry-After": "5"}
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # tries in all, at least 1
    delay: float  # the first backoff in seconds, doubled at each try
    cap: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential delay plus a random part of the other half."""
        ceiling = min(self.cap, self.delay * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _transient(error: Exception) -> bool:
    if isinstance(error, ClientError):
        return _code(error) in TRANSIENT_CODES or _status(error) >= 500 or _status(error) == 429
    return isinstance(
        error,
        HTTPClientError
        | ResponseStreamingError
        | IncompleteReadError
        | aiohttp.ClientError
        | TimeoutError
        | ConnectionError,
    )


def _describe(error: BaseException) -> str:
    """An error without request details (URLs may carry credentials when presigned)."""
    if isinstance(error, ClientError):
        return f"{_code(error) or 'error'} (HTTP {_status(error)})"
    return type(error).__name__


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, config: S3DriverConfig, *, redirect: bool = False) -> None:
        self.config = config
        self.bucket = config.bucket
        self._root = "/".join(p for p in config.rootdirectory.split("/") if p)
        self._redirect = redirect
        self.retry = RetryPolicy(config.maxretries + 1, config.retrydelay.total_seconds())
        self._session = get_session()
        self._client: S3Client | None = None
        self._opening = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()
        self._keys = (config.accesskey, config.secretkey) if config.secretkey else ("", "")
        if bool(config.accesskey) != bool(config.secretkey):
            log.warning("storage.s3: accesskey and secretkey go together; using the AWS chain")
        if not config.v4auth:
            log.warning("storage.s3.v4auth: false is not supported; signing with version 4")
        self.write_args: dict[str, Any] = {}
        if config.encrypt:
            self.write_args["ServerSideEncryption"] = "aws:kms" if config.keyid else "AES256"
            if config.keyid:
                self.write_args["SSEKMSKeyId"] = config.keyid
        if config.storageclass and config.storageclass.upper() != "NONE":
            self.write_args["StorageClass"] = config.storageclass
        if config.objectacl:
            self.write_args["ACL"] = config.objectacl

    # --- plumbing -------------------------------------------------------------------------

    async def s3(self) -> S3Client:
        """The client, opened on first use (it needs the running event loop)."""
        client = self._client
        if client is None:
            async with self._opening:
                client = self._client
                if client is None:
                    client = self._client = await self._stack.enter_async_context(self._open())
        return client

    def _open(self) -> ClientCreatorContext[S3Client]:
        config = self.config
        endpoint = config.regionendpoint or None
        if endpoint is not None and "://" not in endpoint:
            endpoint = ("https://" if config.secure else "http://") + endpoint
        options: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {
                "addressing_style": "path" if config.forcepathstyle else "auto",
                "use_dualstack_endpoint": config.usedualstack,
                "use_accelerate_endpoint": config.accelerate,
            },
            # Retries are ours (below), so that a persistent failure has one clear outcome.
            "retries": {"total_max_attempts": 1},
            "max_pool_connections": 64,
        }
        if config.useragent:
            options["user_agent"] = config.useragent
        # Empty keys leave credentials (and region) to botocore's standard AWS chain.
        return self._session.create_client(
            "s3",
            region_name=config.region or None,
            aws_access_key_id=self._keys[0] or None,
            aws_secret_access_key=self._keys[1] or None,
            aws_session_token=config.sessiontoken or None,
            endpoint_url=endpoint,
            use_ssl=config.secure,
            verify=not config.skipverify,
            config=AioConfig(**options),
        )

    async def call(
        self,
        operation: str,
        request: Callable[[S3Client], Awaitable[T]],
        expected: frozenset[str] = frozenset(),
    ) -> T:
        """Run one S3 request with retries. A ClientError whose code is in ``expected`` is
        the caller's to handle; anything else that persists is StorageUnavailable."""
        s3 = await self.s3()
        failure: Exception | None = None
        for attempt in range(self.retry.attempts):
            try:
                return await request(s3)
            except ClientError as error:
                if _code(error) in expected:
                    raise
                if not _transient(error):
                    log.error("S3 %s failed: %s", operation, _describe(error))
                    raise StorageUnavailable() from error
                failure = error
            except (BotoCoreError, aiohttp.ClientError, TimeoutError, ConnectionError) as error:
                if not _transient(error):
                    log.error("S3 %s failed: %s", operation, _describe(error))
                    raise StorageUnavailable() from error
                failure = error
            if attempt + 1 < self.retry.attempts:
                await asyncio.sleep(self.retry.backoff(attempt))
        assert failure is not None
        log.error(
            "S3 %s failed %d times, last: %s", operation, self.retry.attempts, _describe(failure)
        )
        raise StorageUnavailable() from failure

    def key(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"refusing a relative path component in {path!r}")
        return "/".join([self._root, *parts] if self._root else parts)

    @staticmethod
    def _prefix(key: str) -> str:
        """The prefix of everything under ``key`` taken as a directory."""
        return key + "/" if key else ""

    async def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when there is no such object."""
        try:
            return dict(
                await self.call(
                    "HeadObject", lambda s3: s3.head_object(Bucket=self.bucket, Key=key), NOT_FOUND
                )
            )
        except ClientError:
            return None

    # --- the interface --------------------------------------------------------------------

    async def get_content(self, path: str) -> bytes:
        key = self.key(path)

        async def fetch(s3: S3Client) -> bytes:
            response = await s3.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                return bytes(await body.read())
            finally:
                body.close()

        try:
            return await self.call("GetObject", fetch, NOT_FOUND)
        except ClientError:
            raise PathNotFound(path) from None

    async def put_content(self, path: str, content: bytes) -> None:
        key = self.key(path)
        await self.call(
            "PutObject",
            lambda s3: s3.put_object(Bucket=self.bucket, Key=key, Body=content, **self.write_args),
        )

    async def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        key = self.key(path)
        position = offset
        etag: str | None = None
        for attempt in range(self.retry.attempts):
            arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if position > 0:
                arguments["Range"] = f"bytes={position}-"
            if etag is not None:  # resuming: the same object or nothing
                arguments["IfMatch"] = etag
            try:
                response = await self.call(
                    "GetObject",
                    lambda s3, a=arguments: s3.get_object(**a),  # type: ignore[misc]
                    NOT_FOUND | {"InvalidRange"},
                )
            except ClientError as error:
                if _code(error) == "InvalidRange":
                    return  # the offset is at (or past) the end: nothing to read
                raise PathNotFound(path) from None
            etag = response.get("ETag")
            body = response["Body"]
            try:
                while chunk := await body.read(READ_CHUNK):
                    position += len(chunk)
                    yield chunk
                return
            except (ResponseStreamingError, IncompleteReadError, TimeoutError) as error:
                # The connection broke mid-object: continue from where it stopped.
                if attempt + 1 >= self.retry.attempts:
                    log.error("S3 GetObject stream failed: %s", _describe(error))
                    raise StorageUnavailable() from error
                await asyncio.sleep(self.retry.backoff(attempt))
            finally:
                body.close()

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        key = self.key(path)
        if not append:
            return _S3Writer(self, key, copy_size=0, buffer=bytearray(), dirty=True)
        head = await self.head(key)
        size = int(head["ContentLength"]) if head else 0
        if 0 < size < S3_MIN_PART:
            # Too small to be a part of its own: it joins the buffer (at most 5 MiB).
            try:
                return _S3Writer(
                    self, key, copy_size=0, buffer=bytearray(await self.get_content(path))
                )
            except PathNotFound:
                size = 0
        return _S3Writer(self, key, copy_size=size, buffer=bytearray())

    async def stat(self, path: str) -> FileInfo:
        key = self.key(path)
        head = await self.head(key) if key else None
        if head is not None:
            modified = head.get("LastModified")
            return FileInfo(
                path, int(head["ContentLength"]), modified.timestamp() if modified else 0.0, False
            )
        listing = await self.call(
            "ListObjectsV2",
            lambda s3: s3.list_objects_v2(Bucket=self.bucket, Prefix=self._prefix(key), MaxKeys=1),
        )
        if listing.get("Contents"):
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFound(path)

    async def list_dir(self, path: str) -> list[str]:
        prefix = self._prefix(self.key(path))
        names: set[str] = set()
        async for page in self._pages(prefix, delimiter="/"):
            names.update(p["Prefix"][len(prefix) :].rstrip("/") for p in page["CommonPrefixes"])
            names.update(o["Key"][len(prefix) :] for o in page["Contents"])
        names.discard("")
        if not names:
            raise PathNotFound(path)
        return sorted(names)

    async def _pages(self, prefix: str, delimiter: str = "") -> AsyncIterator[dict[str, Any]]:
        """The pages of a listing, each request retried on its own."""
        token: str | None = None
        while True:
            arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                arguments["Delimiter"] = delimiter
            if token:
                arguments["ContinuationToken"] = token
            page = await self.call(
                "ListObjectsV2",
                lambda s3, a=arguments: s3.list_objects_v2(**a),  # type: ignore[misc]
            )
            yield {
                "Contents": page.get("Contents", []),
                "CommonPrefixes": page.get("CommonPrefixes", []),
            }
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def move(self, source: str, destination: str) -> None:
        src, dst = self.key(source), self.key(destination)
        head = await self.head(src)
        if head is None:
            raise PathNotFound(source)
        size = int(head["ContentLength"])
        copy_source = {"Bucket": self.bucket, "Key": src}
        if size <= self.config.multipartcopythresholdsize:
            await self.call(
                "CopyObject",
                lambda s3: s3.copy_object(
                    Bucket=self.bucket,
                    Key=dst,
                    CopySource=copy_source,  # type: ignore[arg-type]
                    **self.write_args,
                ),
            )
        else:
            await self._multipart_copy(src, dst, size)
        await self.call(
            "DeleteObject", lambda s3: s3.delete_object(Bucket=self.bucket, Key=src), NOT_FOUND
        )

    async def _multipart_copy(self, src: str, dst: str, size: int) -> None:
        """Copy a large object server-side, ``multipartcopymaxconcurrency`` parts at once."""
        part = max(self.config.multipartcopychunksize, -(-size // MAX_PARTS))
        upload = await MultipartUpload.create(self, dst)
        try:
            limit = asyncio.Semaphore(self.config.multipartcopymaxconcurrency)

            async def copy(number: int, start: int) -> None:
                async with limit:
                    await upload.copy_part(number, src, start, min(start + part, size))

            async with asyncio.TaskGroup() as group:
                for number, start in enumerate(range(0, size, part), start=1):
                    group.create_task(copy(number, start))
            await upload.complete(size)
        except BaseException:
            await upload.abort()
            raise

    async def delete(self, path: str) -> None:
        key = self.key(path)
        prefix = self._prefix(key)
        doomed = [key] if key and await self.head(key) is not None else []
        async for page in self._pages(prefix):
            doomed.extend(o["Key"] for o in page["Contents"])
        unfinished = await self._unfinished_uploads(key)
        if not doomed and not unfinished:
            raise PathNotFound(path)
        for upload_key, upload_id in unfinished:
            await self.call(
                "AbortMultipartUpload",
                lambda s3, k=upload_key, u=upload_id: s3.abort_multipart_upload(  # type: ignore[misc]
                    Bucket=self.bucket, Key=k, UploadId=u
                ),
                frozenset({"NoSuchUpload"}),
            )
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = [{"Key": k} for k in doomed[start : start + DELETE_BATCH]]
            result = await self.call(
                "DeleteObjects",
                lambda s3, b=batch: s3.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": b, "Quiet": True}
                ),
            )
            if result.get("Errors"):
                log.error("S3 DeleteObjects left %d objects", len(result["Errors"]))
                raise StorageUnavailable()

    async def _unfinished_uploads(self, key: str) -> list[tuple[str, str]]:
        """Multipart uploads at ``key`` or under it, as (key, upload id)."""
        found: list[tuple[str, str]] = []
        markers: dict[str, Any] = {}
        while True:
            page = await self.call(
                "ListMultipartUploads",
                lambda s3, m=markers: s3.list_multipart_uploads(  # type: ignore[misc]
                    Bucket=self.bucket, Prefix=key, **m
                ),
            )
            for upload in page.get("Uploads", []):
                name = upload.get("Key", "")
                if name == key or name.startswith(self._prefix(key)):
                    found.append((name, upload.get("UploadId", "")))
            if not page.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }

    async def redirect_url(self, path: str, method: str) -> str | None:
        if not self._redirect or method not in ("GET", "HEAD"):
            return None
        s3 = await self.s3()
        return await s3.generate_presigned_url(
            "get_object" if method == "GET" else "head_object",
            Params={"Bucket": self.bucket, "Key": self.key(path)},
            ExpiresIn=PRESIGNED_SECONDS,
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


class MultipartUpload:
    """One S3 multipart upload to ``key``: parts in order, then complete or abort."""

    def __init__(self, driver: S3Driver, key: str, upload_id: str) -> None:
        self.driver = driver
        self.key = key
        self.upload_id = upload_id
        self.parts: dict[int, str] = {}

    @classmethod
    async def create(cls, driver: S3Driver, key: str) -> MultipartUpload:
        response = await driver.call(
            "CreateMultipartUpload",
            lambda s3: s3.create_multipart_upload(
                Bucket=driver.bucket,
                Key=key,
                ContentType="application/octet-stream",
                **driver.write_args,
            ),
        )
        return cls(driver, key, response["UploadId"])

    async def upload_part(self, number: int, data: bytes) -> None:
        response = await self.driver.call(
            "UploadPart",
            lambda s3: s3.upload_part(
                Bucket=self.driver.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
            ),
        )
        self.parts[number] = response["ETag"]

    async def copy_part(self, number: int, source: str, start: int, stop: int) -> None:
        """Part ``number`` is bytes [start, stop) of object ``source``, copied server-side."""
        response = await self.driver.call(
            "UploadPartCopy",
            lambda s3: s3.upload_part_copy(
                Bucket=self.driver.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.driver.bucket, "Key": source},
                CopySourceRange=f"bytes={start}-{stop - 1}",
            ),
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


class _S3Writer(FileWriter):
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
        buffer: bytearray,
        dirty: bool = False,
    ) -> None:
        self._driver = driver
        self._key = key
        self._copy_size = copy_size  # the existing object, to be copied as the first parts
        self._buffer = buffer
        self._size = copy_size + len(buffer)
        self._dirty = dirty  # something to store at close
        self._upload: MultipartUpload | None = None
        self._next_part = 1
        self._inflight: asyncio.Future[None] | None = None
        self._failed = False
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if self._failed or self._closed:
            raise ValueError("write to a failed or closed S3 writer")
        self._buffer += data
        self._size += len(data)
        self._dirty = self._dirty or bool(data)
        chunk = self._driver.config.chunksize
        try:
            while len(self._buffer) >= chunk:
                # The buffer itself becomes the part; only the short rest is copied.
                part, self._buffer = self._buffer, self._buffer[chunk:]
                del part[chunk:]
                data = bytes(part)
                del part
                await self._send(data)
        except BaseException:
            self._failed = True
            raise

    async def _settle(self) -> None:
        """Wait for the part in flight; its failure is the writer's."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _send(self, data: bytes) -> None:
        await self._settle()  # at most one part in flight
        if self._upload is None:
            self._upload = await MultipartUpload.create(self._driver, self._key)
            # The object so far becomes the first parts, copied within S3 (<= 5 GiB each).
            pieces = -(-self._copy_size // S3_MAX_PART)
            for index in range(pieces):
                start = self._copy_size * index // pieces
                stop = self._copy_size * (index + 1) // pieces
                await self._upload.copy_part(index + 1, self._key, start, stop)
            self._next_part = pieces + 1
        number, self._next_part = self._next_part, self._next_part + 1
        if number > MAX_PARTS:
            limit = MAX_PARTS * self._driver.config.chunksize
            raise RegistryError(errors.SIZE_INVALID, f"S3 uploads are limited to {limit} bytes")
        self._inflight = asyncio.ensure_future(self._upload.upload_part(number, data))

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
                body = bytes(self._buffer)
                await self._driver.call(
                    "PutObject",
                    lambda s3: s3.put_object(
                        Bucket=self._driver.bucket,
                        Key=self._key,
                        Body=body,
                        **self._driver.write_args,
                    ),
                )
                return
            if self._buffer or self._upload is None:
                await self._send(bytes(self._buffer))  # the last part may be short
            await self._settle()
            assert self._upload is not None
            await self._upload.complete(self._size)
        except _Aborted:
            await self._abort()
        except BaseException:
            await self._abort()
            raise
        finally:
            self._buffer = bytearray()


class _Aborted(Exception):
    """Internal: close after a failed write."""
