"""Over S3, a PATCH on another instance lands between the final PUT's digest check and the
copy of the upload's data into the blob store. The blob must never hold bytes its digest
does not name: the copy is of the object whose version the digest was checked over, or
the finish checks the data again (and the claimed digest is then refused).

The finishing instance reaches S3 through a proxy that holds its copy into the blob
store until the other instance's PATCH has been acknowledged, so the race ends the worst
way every time."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from aiohttp import web

from tests.registry.conftest import ClientFactory
from tests.registry.scaleout.conftest import s3_proxy
from tests.registry.scaleout.test_upload_chunk_race import race_patch
from tests.registry.scaleout.test_upload_state import NAME, patch, start
from tests.support.backing_services import S3Server

MIB = 1024 * 1024


def is_blob_copy(request: web.Request) -> bool:
    """The finish's copy of the data into the blob store (CopyObject, or the creation of
    the multipart upload that copies it part by part)."""
    into_blobs = "/blobs/" in request.path and request.path.endswith("/data")
    copy = request.method == "PUT" and "x-amz-copy-source" in request.headers
    return into_blobs and (copy or (request.method == "POST" and "uploads" in request.query))


# The data copied whole (CopyObject), or in parts (multipartcopythresholdsize lowered).
@pytest.mark.parametrize("threshold", [None, 5 * MIB], ids=["copy", "multipart"])
async def test_a_patch_landing_before_the_copy_never_stores_a_blob_under_a_wrong_digest(
    make_registry: ClientFactory, s3_server: S3Server, threshold: int | None
) -> None:
    async with s3_proxy(s3_server) as (finisher_s3, finisher_url):
        copying, released = asyncio.Event(), asyncio.Event()

        def hold_the_copy(request: web.Request) -> asyncio.Event | None:
            if is_blob_copy(request) and not copying.is_set():
                copying.set()
                return released
            return None

        finisher_s3.gate = hold_the_copy
        overrides = {"REGISTRY_STORAGE_S3_REGIONENDPOINT": finisher_url}
        if threshold is not None:
            overrides["REGISTRY_STORAGE_S3_MULTIPARTCOPYTHRESHOLDSIZE"] = str(threshold)
            overrides["REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE"] = str(threshold)
        finisher = await make_registry(overrides)
        other = await make_registry()
        prefix = os.urandom(3001 if threshold is None else threshold + 3001)
        location = await start(other)
        location = await patch(other, location, prefix, 0)
        digest = "sha256:" + hashlib.sha256(prefix).hexdigest()
        finishing = asyncio.ensure_future(finisher.put(location, params={"digest": digest}))
        try:
            async with asyncio.timeout(30):  # checked the digest, now copying
                await copying.wait()
            appended = await race_patch(other, location, os.urandom(4099), len(prefix))
        finally:
            released.set()  # never leave the proxy holding a request
        done = await finishing
        assert appended == 202
        blob = await finisher.get(f"/v2/{NAME}/blobs/{digest}")
        if done.status == 201:
            # Only a copy of the first bytes (the parts: appends leave them as they were).
            assert threshold is not None
            assert await blob.read() == prefix
            return
        # The PATCH came first: the data is no longer what the digest names.
        assert done.status == 400, await done.text()
        assert (await done.json())["errors"][0]["code"] == "DIGEST_INVALID"
        assert blob.status == 404, "a blob was stored under a digest its bytes do not have"
