"""An upload whose data ends within STATELESS_SIZE stores no hash state (making one holds
the GIL while it hashes; issue 17), and is still finished, or continued, by any instance
sharing the store: its few bytes are read again. An upload that outgrows that size has
its first bytes hashed again, so the state stored after the request that outgrew it
covers every byte."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from registry.storage import paths
from registry.storage.uploads import STATELESS_SIZE
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.scaleout.test_upload_state import NAME, patch, relative, start

SHARED = {"REGISTRY_HTTP_SECRET": "a secret the instances share"}


def _upload_dir(registry_environ: dict[str, str], location: str) -> Path:
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    upload_id = URL(location).path.rsplit("/", 1)[1]
    return root / paths.upload_dir(NAME, upload_id).lstrip("/")


def _states(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("hashstates/*/*"))


async def test_a_small_upload_stores_no_state_and_another_instance_finishes_it(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    first, second = await make_registry(SHARED), await make_registry(SHARED)
    data = os.urandom(STATELESS_SIZE)
    location = await patch(first, await start(first), data, 0)
    upload = _upload_dir(registry_environ, location)
    assert (upload / "data").stat().st_size == len(data)
    assert _states(upload) == [], "a state was stored for an upload of one piece"

    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    done = await second.put(location, params={"digest": digest})
    assert done.status == 201, await done.text()
    blob = await first.get(f"/v2/{NAME}/blobs/{digest}")
    assert await blob.read() == data


async def test_an_upload_that_outgrows_the_small_size_stores_a_state_of_all_its_bytes(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    first, second, third = [await make_registry(SHARED) for _ in range(3)]
    small, more = os.urandom(STATELESS_SIZE // 2), os.urandom(STATELESS_SIZE)
    location = await patch(first, await start(first), small, 0)
    upload = _upload_dir(registry_environ, location)
    assert _states(upload) == []
    # Another instance has neither the first one's hash nor a stored state.
    location = await patch(second, location, more, len(small))
    assert _states(upload) == [str(len(small) + len(more))]

    # A third instance finishes from that state: right only if it covers both chunks.
    data = small + more
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    done = await third.put(location, params={"digest": digest})
    assert done.status == 201, await done.text()
    blob = await third.get(f"/v2/{NAME}/blobs/{digest}")
    assert await blob.read() == data


async def _streamed_patch(client: RegistryClient, location: str, data: bytes) -> str:
    """A first PATCH as Docker's client sends it: the body streamed, no Content-Length."""

    async def body() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 64 * 1024):
            yield data[at : at + 64 * 1024]

    response = await client.patch(
        location, data=body(), headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status == 202, await response.text()
    assert "Content-Length" not in response.request_info.headers
    return relative(response.headers["Location"])


@pytest.mark.parametrize(
    ("size", "stored"),
    [(STATELESS_SIZE, False), (STATELESS_SIZE + 1, True)],
    ids=["small", "past-the-small-size"],
)
async def test_a_streamed_body_decides_by_its_size_whether_a_state_is_stored(
    make_registry: ClientFactory, registry_environ: dict[str, str], size: int, stored: bool
) -> None:
    first, second = await make_registry(SHARED), await make_registry(SHARED)
    data = os.urandom(size)
    location = await _streamed_patch(first, await start(first), data)
    upload = _upload_dir(registry_environ, location)
    assert (upload / "data").stat().st_size == size
    assert _states(upload) == ([str(size)] if stored else [])

    # Another instance finishes it: from the state, or reading the few bytes again.
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    done = await second.put(location, params={"digest": digest})
    assert done.status == 201, await done.text()
    blob = await first.get(f"/v2/{NAME}/blobs/{digest}")
    assert await blob.read() == data
