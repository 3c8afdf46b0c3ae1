"""What storage promises: nothing half-written is visible, concurrent pushes of one blob
both succeed with one good copy, a mismatched digest stores nothing, and an upload can
be continued by another process that shares the storage."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import os
from pathlib import Path

from yarl import URL

from registry.keys import STORAGE
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob, snapshot


def path_of(location: str) -> str:
    """The path and query of a Location header (TestClient takes relative URLs only)."""
    url = URL(location)
    return str(url.relative()) if url.absolute else location


def blob_files(root: Path) -> list[Path]:
    return sorted((root / "docker/registry/v2/blobs").rglob("data"))


def upload_dirs(root: Path) -> list[Path]:
    return sorted((root / "docker/registry/v2/repositories").rglob("_uploads/*"))


async def test_concurrent_pushes_of_one_blob_leave_one_good_copy(
    registry: RegistryClient, tmp_path: Path
) -> None:
    blob = Blob(os.urandom(3 * 1024 * 1024 + 17))

    async def push(name: str) -> int:
        response = await registry.post(
            f"/v2/{name}/blobs/uploads/", params={"digest": blob.digest}, data=io.BytesIO(blob.data)
        )
        return response.status

    statuses = await asyncio.gather(*(push(f"team/app{i % 3}") for i in range(6)))
    assert statuses == [201] * 6
    root = tmp_path / "registry-data"
    assert len(blob_files(root)) == 1
    assert blob_files(root)[0].read_bytes() == blob.data
    assert upload_dirs(root) == []
    for i in range(3):
        response = await registry.get(f"/v2/team/app{i}/blobs/{blob.digest}")
        assert await response.read() == blob.data


async def test_a_digest_mismatch_stores_nothing(registry: RegistryClient, tmp_path: Path) -> None:
    root = tmp_path / "registry-data"
    before = {k: v for k, v in snapshot(root).items() if "/_uploads/" not in k}
    claimed = Blob(b"what the client claims")
    response = await registry.post(
        "/v2/app/blobs/uploads/", params={"digest": claimed.digest}, data=b"something else"
    )
    assert response.status == 400
    assert (await response.json())["errors"][0]["code"] == "DIGEST_INVALID"
    after = {k: v for k, v in snapshot(root).items() if "/_uploads/" not in k}
    assert blob_files(root) == []
    assert upload_dirs(root) == []
    assert {k for k in after if "/blobs/" in k} == {k for k in before if "/blobs/" in k}
    assert (await registry.head(f"/v2/app/blobs/{claimed.digest}")).status == 404


async def test_sha512_digests_are_verified(registry: RegistryClient) -> None:
    data = os.urandom(100_000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    started = await registry.post("/v2/app/blobs/uploads/")
    location = path_of(started.headers["Location"])
    patched = await registry.patch(location, data=data[:60_000])
    assert patched.status == 202
    done = await registry.put(
        path_of(patched.headers["Location"]), params={"digest": digest}, data=data[60_000:]
    )
    assert done.status == 201, await done.text()
    assert done.headers["Docker-Content-Digest"] == digest
    fetched = await registry.get(f"/v2/app/blobs/{digest}")
    assert await fetched.read() == data

    wrong = "sha512:" + hashlib.sha512(b"other").hexdigest()
    response = await registry.post("/v2/app/blobs/uploads/", params={"digest": wrong}, data=data)
    assert response.status == 400


async def test_an_upload_continues_in_another_process_sharing_storage(
    make_registry: ClientFactory,
) -> None:
    first = await make_registry()
    second = await make_registry()  # same root, its own hash states: as another instance
    data = os.urandom(2 * 1024 * 1024)
    digest = Blob(data).digest
    started = await first.post("/v2/shared/app/blobs/uploads/")
    path = path_of(started.headers["Location"])
    one = await first.patch(path, data=data[:700_000], headers={"Content-Range": "0-699999"})
    assert one.status == 202
    two = await second.patch(
        path, data=io.BytesIO(data[700_000:]), headers={"Content-Range": f"700000-{len(data) - 1}"}
    )
    assert two.status == 202
    assert two.headers["Range"] == f"0-{len(data) - 1}"
    done = await first.put(path, params={"digest": digest})
    assert done.status == 201, await done.text()
    assert await (await second.get(f"/v2/shared/app/blobs/{digest}")).read() == data


async def test_a_cancelled_upload_is_gone(registry: RegistryClient, tmp_path: Path) -> None:
    started = await registry.post("/v2/app/blobs/uploads/")
    location = path_of(started.headers["Location"])
    await registry.patch(location, data=b"partial")
    assert (await registry.delete(location)).status == 204
    assert (await registry.get(location)).status == 404
    assert upload_dirs(tmp_path / "registry-data") == []


async def test_abandoned_uploads_leave_no_per_upload_state_in_memory(
    registry: RegistryClient,
) -> None:
    for _ in range(50):
        started = await registry.post("/v2/app/blobs/uploads/")
        await registry.patch(path_of(started.headers["Location"]), data=b"abandoned")
    gc.collect()
    assert len(registry.app[STORAGE]._locks) == 0
