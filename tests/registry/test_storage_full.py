"""A full disk, for real: the registry's storage on a small tmpfs or journalled ext4,
filled to the last page.

A write that finds no space answers 507 ``STORAGE_FULL`` and leaves no trace: no tag that
is listed but unknown, no manifest revision, no partial upload holding space. Once space
is freed everything works again. Needs root (to mount); skips elsewhere, except in CI.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.registry.helpers import Blob
from tests.registry.test_api_errors import manifest
from tests.support.ext4 import mounted_ext4
from tests.support.oci import OCI_MANIFEST
from tests.support.portside_servers import ServerProcess, free_port
from tests.support.tmpfs import mounted_tmpfs

PAGE = 4096
NAME = "full/disk"


@pytest.fixture(params=["tmpfs", "ext4"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, or an 8 MiB ext4 with a journal (where several files of a request
    are written in one go: ``filesystem_staged``), mounted in tmp, always unmounted at
    the end."""
    if request.param == "tmpfs":
        with mounted_tmpfs(tmp_path / "disk", "size=4m") as mount_point:
            yield mount_point
        return
    (tmp_path / "ext4").mkdir()
    with mounted_ext4(tmp_path / "ext4", size=8 * 1024 * 1024) as mount_point:
        yield mount_point


@pytest.fixture
def registry_on(small_disk: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    server = ServerProcess(
        "registry",
        ["registry", "serve"],
        port,
        "/",
        tmp_path / "registry.log",  # beside the disk, not on it
        env={
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(small_disk / "registry"),
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


def fill(filler: Path) -> None:
    """Append to ``filler`` until the filesystem has not one page left."""
    chunk = b"\0" * (256 * 1024)
    with filler.open("ab", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                if len(chunk) == PAGE:
                    return
                chunk = chunk[: len(chunk) // 2]


def leave_free(filler: Path, pages: int) -> None:
    fill(filler)
    size = filler.stat().st_size
    os.truncate(filler, (size // PAGE - pages) * PAGE)


def upload_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("registry/docker/registry/v2/repositories/*/*/_uploads/*"))


async def assert_storage_full(response: aiohttp.ClientResponse) -> None:
    assert response.status == 507, await response.text()
    error = (await response.json())["errors"][0]
    assert error["code"] == "STORAGE_FULL", error
    assert "full" in error["message"], error


async def test_a_full_disk_answers_507_and_leaves_no_trace(
    registry_on: ServerProcess, small_disk: Path, session: aiohttp.ClientSession
) -> None:
    url = registry_on.url + f"/v2/{NAME}"
    config, layer = Blob(b"{}"), Blob(os.urandom(10_000))
    for blob in (config, layer):
        async with session.post(f"{url}/blobs/uploads/?digest={blob.digest}", data=blob.data) as r:
            assert r.status == 201, await r.text()
    async with session.post(f"{url}/blobs/uploads/") as started:
        assert started.status == 202
        upload = started.headers["Location"]
    filler = small_disk / "filler"
    fill(filler)

    # A chunk with no room: 507, and the upload with its partial data is gone at once.
    async with session.patch(upload, data=os.urandom(1024 * 1024)) as patched:
        await assert_storage_full(patched)
    assert upload_dirs(small_disk) == []
    async with session.get(upload) as progress:
        assert progress.status == 404
    big = Blob(os.urandom(1024 * 1024))
    async with session.post(f"{url}/blobs/uploads/?digest={big.digest}", data=big.data) as r:
        await assert_storage_full(r)
    assert upload_dirs(small_disk) == []

    # Manifests under new tags with 0, 1, 2... pages left: each step of the push (the
    # manifest's content, its revision link, the tag's index and current links) in turn
    # is the one that finds the disk full, until there is room for all of them.
    outcomes: dict[str, tuple[int, str]] = {}
    for pages in range(8):
        leave_free(filler, pages)
        body = manifest(config, layer, annotations={"pages": str(pages)})
        headers = {"Content-Type": OCI_MANIFEST}
        async with session.put(f"{url}/manifests/t{pages}", data=body, headers=headers) as r:
            if r.status != 201:
                await assert_storage_full(r)
            outcomes[f"t{pages}"] = (r.status, Blob(body).digest)
    assert outcomes["t0"][0] == 507 and outcomes["t7"][0] == 201, outcomes
    filler.unlink()  # space freed: what failed must still be absent, not half there

    async with session.get(f"{url}/tags/list") as listing:
        listed = (await listing.json())["tags"]
    assert listed == sorted(tag for tag, (status, _) in outcomes.items() if status == 201)
    for tag, (status, digest) in outcomes.items():
        for reference in (tag, digest):
            async with session.get(f"{url}/manifests/{reference}") as fetched:
                assert fetched.status == (200 if status == 201 else 404), (tag, reference)
    failed = next(tag for tag, (status, _) in reversed(outcomes.items()) if status == 507)
    body = manifest(config, layer, annotations={"pages": failed[1:]})
    async with session.put(
        f"{url}/manifests/{failed}", data=body, headers={"Content-Type": OCI_MANIFEST}
    ) as retried:
        assert retried.status == 201, await retried.text()
    log = registry_on.wait_for_log("no space left")
    assert "Traceback" not in log, log
