"""The S3 driver: Distribution's layout as objects in one bucket, through aioboto3's
asynchronous S3 client.

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
the ones under the deleted prefix (``s3_delete``, which also batches ``delete_many``).
Each write stores a random version in the object's metadata, reported by ``stat`` and by
writers, so that what was computed over one version is never taken for another's
(``s3_upload`` says how).

Failures. Throttling, 5xx and broken connections are retried with exponential backoff
and jitter; what keeps failing (or any other S3 error) is logged and raised as the
driver's ``StorageUnavailable`` (a 503 ``UNAVAILABLE`` for the client). Nothing
half-written becomes visible: an object is only ever replaced by a PUT, a completed
multipart upload or a copy, each atomic.

The writer and multipart uploads are in ``s3_upload``, retries and errors in ``s3_retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from registry.storage.driver import s3_delete
from registry.storage.driver.base import (
    Content,
    ContentChanged,
    FileInfo,
    FileWriter,
    PathNotFound,
    StorageDriver,
    StorageUnavailable,
)
from registry.storage.driver.readahead import read_ahead
from registry.storage.driver.s3_direct import DirectRead
from registry.storage.driver.s3_get import direct_reads, read_through_client
from registry.storage.driver.s3_retry import (
    NOT_FOUND,
    RetryPolicy,
    describe,
    error_code,
    is_transient,
)
from registry.storage.driver.s3_upload import (
    COPY_REFUSED,
    VERSION_KEY,
    multipart_copy,
    new_version,
    open_writer,
    version_of,
)
from registry.storage.s3_settings import S3DriverConfig

__all__ = ["S3Driver", "StorageUnavailable"]

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger("registry.storage.s3")

T = TypeVar("T")
PRESIGNED_SECONDS = 20 * 60  # as Distribution


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, config: S3DriverConfig, *, redirect: bool = False) -> None:
        self.config = config
        self.bucket = config.bucket
        self._root = "/".join(p for p in config.rootdirectory.split("/") if p)
        self._redirect = redirect
        self._direct = direct_reads(self._endpoint() or "")
        self.retry = RetryPolicy(config.maxretries + 1, config.retrydelay.total_seconds())
        self._session = aioboto3.Session()
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

    def _endpoint(self) -> str | None:
        endpoint = self.config.regionendpoint or None
        if endpoint is not None and "://" not in endpoint:
            endpoint = ("https://" if self.config.secure else "http://") + endpoint
        return endpoint

    def _open(self) -> ClientCreatorContext[S3Client]:
        config = self.config
        endpoint = self._endpoint()
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
        return self._session.client(
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
                if error_code(error) in expected:
                    raise
                if not is_transient(error):
                    log.error("S3 %s failed: %s", operation, describe(error))
                    raise StorageUnavailable() from error
                failure = error
            except (BotoCoreError, aiohttp.ClientError, TimeoutError, ConnectionError) as error:
                if not is_transient(error):
                    log.error("S3 %s failed: %s", operation, describe(error))
                    raise StorageUnavailable() from error
                failure = error
            if attempt + 1 < self.retry.attempts:
                await asyncio.sleep(self.retry.backoff(attempt))
        assert failure is not None
        log.error(
            "S3 %s failed %d times, last: %s", operation, self.retry.attempts, describe(failure)
        )
        raise StorageUnavailable() from failure

    def key(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"refusing a relative path component in {path!r}")
        return "/".join([self._root, *parts] if self._root else parts)

    @staticmethod
    def prefix(key: str) -> str:
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

    async def fetch(self, key: str) -> tuple[bytes, str | None] | None:
        """The object's content and version, or None when there is no such object."""

        async def get(s3: S3Client) -> tuple[bytes, str | None]:
            response = await s3.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                return bytes(await body.read()), version_of(response)
            finally:
                body.close()

        try:
            return await self.call("GetObject", get, NOT_FOUND)
        except ClientError:
            return None

    async def get_content(self, path: str) -> bytes:
        fetched = await self.fetch(self.key(path))
        if fetched is None:
            raise PathNotFound(path)
        return fetched[0]

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        key = self.key(path)
        await self.call(
            "PutObject",
            lambda s3: s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=content,
                Metadata={VERSION_KEY: new_version()},
                **self.write_args,
            ),
        )

    def reader(self, path: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        # Over plain HTTP the bytes come straight off the socket, or are spliced into the
        # client's (s3_get, s3_direct say why). Read ahead: S3 keeps sending while the
        # caller writes to its client.
        if self._direct:
            return DirectRead(self, self.key(path), path, offset)
        return read_ahead(read_through_client(self, self.key(path), path, offset))

    async def writer(
        self, path: str, append: bool = False, *, existing: bool = False
    ) -> FileWriter:
        return await open_writer(self, self.key(path), append, existing=path if existing else None)

    async def stat(self, path: str) -> FileInfo:
        key = self.key(path)
        head = await self.head(key) if key else None
        if head is not None:
            modified = head.get("LastModified")
            seconds = modified.timestamp() if modified else 0.0
            return FileInfo(path, int(head["ContentLength"]), seconds, False, version_of(head))
        listing = await self.call(
            "ListObjectsV2",
            lambda s3: s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix(key), MaxKeys=1),
        )
        if listing.get("Contents"):
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFound(path)

    async def list_dir(self, path: str) -> list[str]:
        prefix = self.prefix(self.key(path))
        names: set[str] = set()
        async for page in self.pages(prefix, delimiter="/"):
            names.update(p["Prefix"][len(prefix) :].rstrip("/") for p in page["CommonPrefixes"])
            names.update(o["Key"][len(prefix) :] for o in page["Contents"])
        names.discard("")
        if not names:
            raise PathNotFound(path)
        return sorted(names)

    async def pages(self, prefix: str, delimiter: str = "") -> AsyncIterator[dict[str, Any]]:
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

    async def move(self, source: str, destination: str, *, expected: Content | None = None) -> None:
        """Copy, then delete the source. With ``expected``, only the object whose version
        a HEAD saw both before and after it was copied ever reaches ``destination``.

        Another instance may append to the source meanwhile (a new object, a new
        version). The copy therefore goes first to a key of this call's own, beside the
        source, and on to ``destination`` only once a second HEAD shows the source
        unchanged: a copied-then-changed object must never overwrite ``destination``,
        which may be a blob another client was already told exists. The cost is a second
        server-side copy per finish. The copy also names the ETag seen
        (``x-amz-copy-source-if-match``): AWS then refuses to copy any other object; the
        version check stays, since ETags are MD5s and moto 5.2 and Ceph RGW 16.2 ignore
        the header (tried: both copy despite a wrong ETag)."""
        src, dst = self.key(source), self.key(destination)
        head = await self.head(src)
        if head is None:
            raise PathNotFound(source)
        size = int(head["ContentLength"])
        if expected is None:
            await self._copy(source, src, dst, size, None)
        else:
            if (size, version_of(head)) != (expected.size, expected.version):
                raise ContentChanged(source)
            staged = f"{src}.staged-{uuid.uuid4().hex}"
            try:
                await self._copy(source, src, staged, size, head.get("ETag"))
                if version_of(await self.head(src)) != expected.version:
                    raise ContentChanged(source)
                await self._copy(source, staged, dst, size, None)
            finally:
                await self.call(
                    "DeleteObject",
                    lambda s3: s3.delete_object(Bucket=self.bucket, Key=staged),
                    NOT_FOUND,
                )
        await self.call(
            "DeleteObject", lambda s3: s3.delete_object(Bucket=self.bucket, Key=src), NOT_FOUND
        )

    async def _copy(self, source: str, src: str, dst: str, size: int, etag: str | None) -> None:
        """Copy object ``src`` (``size`` bytes; only if its ETag is ``etag``, where S3
        honours that) to ``dst``, server-side; ``source`` names it in errors."""
        try:
            if size <= self.config.multipartcopythresholdsize:
                condition = {"CopySourceIfMatch": etag} if etag else {}
                await self.call(
                    "CopyObject",
                    lambda s3: s3.copy_object(
                        Bucket=self.bucket,
                        Key=dst,
                        CopySource={"Bucket": self.bucket, "Key": src},
                        **condition,  # type: ignore[arg-type]
                        **self.write_args,
                    ),
                    COPY_REFUSED,
                )
            else:
                await multipart_copy(self, src, dst, size, etag)
        except ClientError as error:
            if error_code(error) in NOT_FOUND:
                raise PathNotFound(source) from None  # moved by another finisher meanwhile
            raise ContentChanged(source) from None  # the ETag no longer matches

    async def delete(self, path: str) -> None:
        doomed = await s3_delete.find(self, path)
        if doomed.empty:
            raise PathNotFound(path)
        await s3_delete.remove(self, [doomed])

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        # Each prefix is listed all the same (one request, whatever ``sole_file`` says):
        # deleting only the expected key would leave anything else under it.
        return await s3_delete.delete_many(self, paths)

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
