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
import io
import os

import pytest
from aiohttp import web

from tests.registry.conftest import ClientFactory
from tests.registry.scaleout.conftest import s3_proxy
from tests.registry.scaleout.test_upload_chunk_race import race_patch
from tests.registry.scaleout.test_upload_state import NAME, patch, start
from tests.support.backing_services import S3Server

MIB = 1024 * 1024


def is_finish_copy(request: web.Request) -> bool:
    """The finish's first copy of the upload's data (CopyObject, or the creation of the
    multipart upload that copies it part by part): to a key of its own beside the data,
    from which only a copy of unchanged data goes on into the blob store."""
    staged = "/_uploads/" in request.path and ".staged-" in request.path
    copy = request.method == "PUT" and "x-amz-copy-source" in request.headers
    return staged and (copy or (request.method == "POST" and "uploads" in request.query))


# The data copied whole (CopyObject), or in parts (multipartcopythresholdsize lowered);
# with the same blob pushed whole into another repository during the copy, or not.
@pytest.mark.parametrize("pushed_meanwhile", [False, True], ids=["alone", "pushed-meanwhile"])
@pytest.mark.parametrize("threshold", [None, 5 * MIB], ids=["copy", "multipart"])
async def test_a_patch_landing_before_the_copy_never_stores_a_blob_under_a_wrong_digest(
    make_registry: ClientFactory, s3_server: S3Server, threshold: int | None, pushed_meanwhile: bool
) -> None:
    async with s3_proxy(s3_server) as (finisher_s3, finisher_url):
        copying, released = asyncio.Event(), asyncio.Event()

        def hold_the_copy(request: web.Request) -> asyncio.Event | None:
            if is_finish_copy(request) and not copying.is_set():
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
            if pushed_meanwhile:
                # Acknowledged while the finish copies: a copy of the changed data must
                # never overwrite it (before, it did, and was then deleted as corrupt).
                pushed = await other.post(
                    f"/v2/{NAME}-b/blobs/uploads/",
                    params={"digest": digest},
                    data=io.BytesIO(prefix),
                )
                assert pushed.status == 201, await pushed.text()
        finally:
            released.set()  # never leave the proxy holding a request
        done = await finishing
        assert appended == 202
        if pushed_meanwhile:
            kept = await finisher.get(f"/v2/{NAME}-b/blobs/{digest}")
            assert kept.status == 200 and await kept.read() == prefix
        blob = await finisher.get(f"/v2/{NAME}/blobs/{digest}")
        # The PATCH came during the copy: the data is no longer what the digest names.
        assert done.status == 400, await done.text()
        assert (await done.json())["errors"][0]["code"] == "DIGEST_INVALID"
        assert blob.status == 404, "a blob was stored under a digest its bytes do not have"
