"""A finishing PUT sent again after its upload was committed — by nginx to the next
instance when the instance that committed was killed before it answered, or by a client
whose response was lost — answers 201 for the committed blob, on any instance; one that
races the first finish and loses is told the upload is unknown. The chaos soak
(tests/e2e/test_soak.py, bench/scenarios/soak.py) found them answering 404 and 500."""

from __future__ import annotations

import hashlib
import os

from aiohttp import web

from tests.registry.conftest import ClientFactory
from tests.registry.scaleout.conftest import FaultyS3
from tests.registry.scaleout.test_upload_state import NAME, error_code, patch, relative, start


async def test_a_repeated_finishing_put_answers_201_on_any_instance(
    make_registry: ClientFactory,
) -> None:
    committing, retrying = await make_registry(), await make_registry()
    data = os.urandom(64 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = await patch(committing, await start(committing), data, 0)
    first = await committing.put(location, params={"digest": digest})
    assert first.status == 201, await first.text()
    for instance in (retrying, committing):
        again = await instance.put(location, params={"digest": digest})
        assert again.status == 201, await again.text()
        assert again.headers["Docker-Content-Digest"] == digest
        assert relative(again.headers["Location"]) == relative(first.headers["Location"])
    blob = await retrying.get(f"/v2/{NAME}/blobs/{digest}")
    assert await blob.read() == data


async def test_a_repeated_put_of_a_blob_the_repository_lacks_stays_unknown(
    make_registry: ClientFactory,
) -> None:
    client = await make_registry()
    data = os.urandom(1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = await patch(client, await start(client), data, 0)
    assert (await client.put(location, params={"digest": digest})).status == 201
    absent = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()
    assert await error_code(client, "PUT", location, params={"digest": absent}) == (
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    # Nor does another repository's committed upload reach this one's blobs.
    elsewhere = location.replace(f"/v2/{NAME}/", "/v2/team/other/")
    assert await error_code(client, "PUT", elsewhere, params={"digest": digest}) == (
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )


async def test_an_upload_taken_by_another_instance_while_finishing_is_unknown_not_500(
    make_registry: ClientFactory, faulty_s3: tuple[FaultyS3, str]
) -> None:
    # The 100-client soak: nginx resent a slow finishing PUT to a second instance; the
    # first moved the upload's data into place while the second was about to hash it,
    # and the second answered 500. Here the second instance's read of the data finds it
    # gone, as it did then.
    proxy, url = faulty_s3
    receiving = await make_registry()
    finishing = await make_registry({"REGISTRY_STORAGE_S3_REGIONENDPOINT": url})
    data = os.urandom(64 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = await patch(receiving, await start(receiving), data, 0)

    def taken(request: web.Request) -> int | None:
        # The stored hash state is not found either, so that the finishing instance reads
        # the data (with the state it would finish without reading it).
        upload = request.method == "GET" and "/_uploads/" in request.path
        reading = request.path.endswith("/data") or "/hashstates/" in request.path
        return 404 if upload and reading else None

    proxy.fault = taken
    assert await error_code(finishing, "PUT", location, params={"digest": digest}) == (
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    assert proxy.failed >= 1  # the data really was read, and found gone
