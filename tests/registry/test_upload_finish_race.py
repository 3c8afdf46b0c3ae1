"""Two instances on one filesystem store: a PATCH on one holds the upload's data file open
when the other finishes the upload and renames the file into the blob store. The PATCH's
bytes must not land in the blob (after the bytes its digest was checked over): it is
refused as an upload no longer known (404 ``BLOB_UPLOAD_UNKNOWN``: the upload is gone,
committed; 416 would tell the client to resume an upload that no longer exists)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

from tests.registry.conftest import ClientFactory
from tests.registry.scaleout.test_upload_state import NAME, patch, start

ROOT = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"


def open_by_this_process(path: Path) -> bool:
    """Whether a descriptor of this process (where both test instances run) is ``path``."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
        except OSError:
            continue  # closed meanwhile
    return False


async def test_a_patch_holding_the_data_open_adds_nothing_to_the_finished_blob(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    finisher, other = await make_registry(), await make_registry()
    prefix = os.urandom(3001)
    location = await start(finisher)
    location = await patch(finisher, location, prefix, 0)
    upload_id = location.split("?")[0].rsplit("/", 1)[1]
    data = (
        Path(registry_environ[ROOT])
        / f"docker/registry/v2/repositories/{NAME}/_uploads/{upload_id}/data"
    )
    released = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield os.urandom(100)  # the writer is open: the body is batched until its end
        await released.wait()
        yield os.urandom(4099)

    patching = asyncio.ensure_future(
        other.patch(location, data=body(), headers={"Content-Type": "application/octet-stream"})
    )
    try:
        async with asyncio.timeout(30):  # generous: the machine is shared
            for _ in itertools.count():  # until the writer has opened the data
                if open_by_this_process(data):
                    break
                await asyncio.sleep(0.01)
        digest = "sha256:" + hashlib.sha256(prefix).hexdigest()
        done = await finisher.put(location, params={"digest": digest})
        assert done.status == 201, await done.text()
    finally:
        released.set()
    refused = await patching
    assert refused.status == 404, await refused.text()
    assert (await refused.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    blob = await finisher.get(f"/v2/{NAME}/blobs/{digest}")
    assert await blob.read() == prefix
