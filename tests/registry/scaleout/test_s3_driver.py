"""What the storage layer relies on from the S3 driver beyond the shared conformance
suite: appends continued by another instance across S3's 5 MiB part minimum, server-side
moves, cleanup of unfinished multipart uploads, retries, 503 on persistent failure,
presigned redirects, and memory that stays flat whatever the size."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import pytest

from registry.storage.driver.base import PathNotFound
from registry.storage.driver.s3 import S3Driver, StorageUnavailable
from tests.registry.conftest import ClientFactory
from tests.registry.scaleout.conftest import FaultyS3
from tests.support.backing_services import S3Server

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

T = TypeVar("T")

MIB = 1024 * 1024


@pytest.fixture
async def driver(s3_server: S3Server, bucket: str) -> AsyncIterator[S3Driver]:
    instance = S3Driver(s3_server.driver_config(bucket, rootdirectory="/some/prefix"))
    yield instance
    await instance.close()


@pytest.fixture
async def other_instance(s3_server: S3Server, bucket: str) -> AsyncIterator[S3Driver]:
    """A second driver over the same bucket, as another registry process has."""
    instance = S3Driver(s3_server.driver_config(bucket, rootdirectory="/some/prefix"))
    yield instance
    await instance.close()


async def read_all(driver: S3Driver, path: str, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in driver.reader(path, offset)])


async def unfinished_uploads(driver: S3Driver) -> list[str]:
    s3 = await driver.s3()
    listing = await s3.list_multipart_uploads(Bucket=driver.bucket)
    return [u.get("Key", "") for u in listing.get("Uploads", [])]


async def append(driver: S3Driver, path: str, data: bytes, piece: int = MIB) -> int:
    writer = await driver.writer(path, append=True)
    start = writer.size
    for at in range(0, len(data), piece):
        await writer.write(data[at : at + piece])
    await writer.close()
    return start


async def test_an_upload_continues_on_another_instance_across_the_part_minimum(
    driver: S3Driver, other_instance: S3Driver
) -> None:
    path = "/repositories/app/_uploads/u1/data"
    chunks = [os.urandom(n) for n in (3 * MIB, 1 * MIB + 7, 6 * MIB + 3, 5, 11 * MIB)]
    expected = b""
    for index, chunk in enumerate(chunks):
        # Each chunk on the other instance than the one before, as behind a load balancer.
        writer_driver = driver if index % 2 == 0 else other_instance
        assert await append(writer_driver, path, chunk) == len(expected)
        expected += chunk
        assert (await other_instance.stat(path)).size == len(expected)
    assert await read_all(driver, path) == expected
    assert await read_all(other_instance, path, 9 * MIB + 1) == expected[9 * MIB + 1 :]
    assert await unfinished_uploads(driver) == []
    # The key layout is Distribution's: rootdirectory, then the path.
    s3 = await driver.s3()
    head = await s3.head_object(Bucket=driver.bucket, Key="some/prefix" + path)
    assert head["ContentLength"] == len(expected)


async def test_a_failed_write_leaves_the_object_as_it_was(
    s3_server: S3Server, bucket: str, faulty_s3: tuple[FaultyS3, str]
) -> None:
    proxy, url = faulty_s3
    faulty = S3Driver(s3_server.driver_config(bucket, regionendpoint=url))
    try:
        await append(faulty, "/upload/data", b"committed")
        # Every part upload fails from now on: the writer must not complete a file
        # with a piece missing, and must abort its multipart upload.
        proxy.fault = lambda r: 503 if "partNumber" in r.query else None
        writer = await faulty.writer("/upload/data", append=True)
        with pytest.raises(StorageUnavailable):  # parts go out in the background:
            await writer.write(os.urandom(6 * MIB))  # the failure shows here
            await writer.close()  # or here
        await writer.close()
        proxy.fault = lambda r: None
        assert await faulty.get_content("/upload/data") == b"committed"
        assert await unfinished_uploads(faulty) == []
    finally:
        await faulty.close()


async def test_move_copies_server_side_in_parts_above_the_threshold(
    s3_server: S3Server, bucket: str
) -> None:
    driver = S3Driver(
        s3_server.driver_config(
            bucket,
            multipartcopythresholdsize=5 * MIB,
            multipartcopychunksize=5 * MIB,
            multipartcopymaxconcurrency=2,
        )
    )
    try:
        data = os.urandom(12 * MIB + 5)
        await append(driver, "/_uploads/x/data", data)
        await driver.move("/_uploads/x/data", "/blobs/sha256/ab/abc/data")
        assert await read_all(driver, "/blobs/sha256/ab/abc/data") == data
        with pytest.raises(PathNotFound):
            await driver.stat("/_uploads/x/data")
        s3 = await driver.s3()
        head = await s3.head_object(Bucket=bucket, Key="blobs/sha256/ab/abc/data")
        assert head["ETag"].strip('"').endswith("-3")  # three parts: a multipart copy
        assert await unfinished_uploads(driver) == []
    finally:
        await driver.close()


async def test_delete_aborts_unfinished_uploads_under_the_prefix(driver: S3Driver) -> None:
    await driver.put_content("/repo/_uploads/u/startedat", b"1")
    s3 = await driver.s3()
    await s3.create_multipart_upload(Bucket=driver.bucket, Key="some/prefix/repo/_uploads/u/data")
    await s3.create_multipart_upload(Bucket=driver.bucket, Key="some/prefix/repo/_uploads/uu")
    await driver.delete("/repo/_uploads/u")
    assert await unfinished_uploads(driver) == ["some/prefix/repo/_uploads/uu"]
    with pytest.raises(PathNotFound):
        await driver.stat("/repo/_uploads/u")


class CountingS3Driver(S3Driver):
    """The real driver, counting the S3 requests it makes by operation."""

    requests: Counter[str]

    async def call(
        self,
        operation: str,
        request: Callable[[S3Client], Awaitable[T]],
        expected: frozenset[str] = frozenset(),
    ) -> T:
        self.requests[operation] += 1
        return await super().call(operation, request, expected)


async def test_delete_many_batches_the_objects_of_many_paths(
    s3_server: S3Server, bucket: str
) -> None:
    driver = CountingS3Driver(s3_server.driver_config(bucket, rootdirectory="/some/prefix"))
    driver.requests = Counter()
    try:
        paths = [f"/blobs/{n:03d}" for n in range(40)]
        for path in paths:
            await driver.put_content(f"{path}/data", b"1234")
        driver.requests.clear()
        removed = await driver.delete_many([*paths, "/blobs/missing"])
        assert removed == [4] * 40 + [None]
        # One DeleteObjects for all 40 (it was one per path, each after its own listing).
        assert driver.requests["DeleteObjects"] == 1
        with pytest.raises(PathNotFound):
            await driver.list_dir("/blobs")
    finally:
        await driver.close()


async def test_throttling_and_5xx_are_retried_with_backoff(
    s3_server: S3Server, bucket: str, faulty_s3: tuple[FaultyS3, str]
) -> None:
    proxy, url = faulty_s3
    driver = S3Driver(s3_server.driver_config(bucket, regionendpoint=url, maxretries=3))
    failures = iter([503, 500, None, 503, None, 500, None])
    proxy.fault = lambda request: next(failures, None)
    try:
        await driver.put_content("/a", b"content")
        assert await driver.get_content("/a") == b"content"
        assert await read_all(driver, "/a", 3) == b"tent"
        assert proxy.failed == 4
    finally:
        await driver.close()


async def test_a_persistent_failure_is_storage_unavailable(
    s3_server: S3Server, bucket: str, faulty_s3: tuple[FaultyS3, str]
) -> None:
    proxy, url = faulty_s3
    driver = S3Driver(s3_server.driver_config(bucket, regionendpoint=url, maxretries=2))
    proxy.fault = lambda request: 503
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await driver.put_content("/a", b"content")
        assert "unavailable" in str(raised.value)
        assert proxy.requests == 3  # one try and two retries
    finally:
        await driver.close()


async def test_redirect_urls_are_presigned_and_only_when_enabled(
    s3_server: S3Server, bucket: str, driver: S3Driver
) -> None:
    await driver.put_content("/blob", b"redirected content")
    assert await driver.redirect_url("/blob", "GET") is None
    redirecting = S3Driver(
        s3_server.driver_config(bucket, rootdirectory="/some/prefix"), redirect=True
    )
    try:
        url = await redirecting.redirect_url("/blob", "GET")
        assert url is not None and "X-Amz-Signature=" in url
        assert await redirecting.redirect_url("/blob", "DELETE") is None
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert await response.read() == b"redirected content"
    finally:
        await redirecting.close()


async def test_memory_stays_flat_whatever_the_size(driver: S3Driver) -> None:
    size = 32 * MIB
    piece = os.urandom(MIB)
    await driver.put_content("/warm-up", b"")  # the client and its models, loaded once
    tracemalloc.start()
    try:
        writer = await driver.writer("/big/data")
        for _ in range(size // MIB):
            await writer.write(piece)
        await writer.close()
        _, written_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        async for chunk in driver.reader("/big/data"):
            total += len(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    # A part in flight while the next fills: a few chunksize (5 MiB) buffers, not 32 MiB.
    assert written_peak < 4 * 5 * MIB, written_peak
    assert read_peak < 8 * MIB, read_peak


async def test_an_app_over_failing_s3_answers_503_and_stores_nothing(
    faulty_s3: tuple[FaultyS3, str], make_registry: ClientFactory
) -> None:
    proxy, url = faulty_s3
    client = await make_registry({"REGISTRY_STORAGE_S3_REGIONENDPOINT": url})
    data = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    proxy.fault = lambda request: 503
    response = await client.post(f"/v2/app/blobs/uploads/?digest={digest}", data=data)
    assert response.status == 503
    assert (await response.json())["errors"][0]["code"] == "UNAVAILABLE"
    response = await client.head(f"/v2/app/blobs/{digest}")
    assert response.status == 503
    proxy.fault = lambda request: None
    response = await client.head(f"/v2/app/blobs/{digest}")
    assert response.status == 404


async def test_credentials_come_from_the_aws_chain_when_not_configured(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The AWS chain reads the process environment: this test has to set it.
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a metadata service
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    # The server's own keys (a real S3 checks them), from the environment only.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    chained = S3Driver(s3_server.driver_config(bucket, accesskey="", secretkey=""))
    try:
        await chained.put_content("/a", b"chained")
        assert await chained.get_content("/a") == b"chained"
    finally:
        await chained.close()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    without = S3Driver(s3_server.driver_config(bucket, accesskey="", secretkey=""))
    try:
        with pytest.raises(StorageUnavailable):  # no credentials anywhere: a clear 503
            await without.get_content("/a")
    finally:
        await without.close()
