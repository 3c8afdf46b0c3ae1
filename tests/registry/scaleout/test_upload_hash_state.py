"""Over S3: each chunk's hash state is stored, so the instance that finishes an upload
continues another instance's hash instead of re-reading the data (SHA-512 too, when the
upload was started with ``digest-algorithm=sha512``); a state that fails its check is
ignored and the data re-read, so a forged state never lets a wrong blob in; so is a state
computed over another version of the data (other bytes of the same size)."""

from __future__ import annotations

import hashlib
import os

import pytest
from yarl import URL

from registry.keys import STORAGE
from registry.storage import paths
from registry.storage.hashstates import ResumableHasher
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.scaleout.conftest import s3_proxy
from tests.registry.scaleout.test_upload_state import NAME, patch, relative, start
from tests.support.backing_services import S3Server

CHUNK = 1024 * 1024 + 7  # not a whole number of hash blocks: states carry a partial block


def upload_id(location: str) -> str:
    return URL(location).path.rsplit("/", 1)[1]


async def chunked(instances: list[RegistryClient], data: bytes, algorithm: str = "sha256") -> str:
    """Push ``data`` in chunks, each to the next instance; the upload's last location."""
    if algorithm == "sha256":
        location = await start(instances[0])
    else:
        params = {"digest-algorithm": algorithm}
        started = await instances[0].post(f"/v2/{NAME}/blobs/uploads/", params=params)
        assert started.status == 202, await started.text()
        location = relative(started.headers["Location"])
    for index, at in enumerate(range(0, len(data), CHUNK)):
        location = await patch(instances[index % len(instances)], location, data[at:][:CHUNK], at)
    return location


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_the_finishing_instance_resumes_the_stored_hash_without_reading_the_data(
    make_registry: ClientFactory, s3_server: S3Server, algorithm: str
) -> None:
    instances = [await make_registry() for _ in range(2)]
    data = os.urandom(5 * CHUNK - 3)
    location = await chunked(instances, data, algorithm)
    async with s3_proxy(s3_server) as (s3, url):
        # The third instance reaches S3 through a proxy that sees what it reads.
        finisher = await make_registry({"REGISTRY_STORAGE_S3_REGIONENDPOINT": url})
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        done = await finisher.put(location, params={"digest": digest})
        assert done.status == 201, await done.text()
        data_path = paths.upload_data(NAME, upload_id(location))
        assert s3.seen, "the finisher did not go through the proxy"
        assert not [seen for seen in s3.seen if seen[0] == "GET" and seen[1].endswith(data_path)]
    blob = await instances[0].get(f"/v2/{NAME}/blobs/{digest}")
    assert await blob.read() == data


async def test_a_state_over_other_bytes_of_the_same_size_is_not_used(
    make_registry: ClientFactory,
) -> None:
    instances = [await make_registry() for _ in range(3)]
    data = os.urandom(3 * CHUNK)
    location = await chunked(instances[:2], data)
    # Same size, other bytes, written behind the registry's back: the stored state is of
    # another version of the data, so the finisher re-reads and finds the real digest.
    other = os.urandom(len(data))
    driver = instances[2].app[STORAGE].driver
    await driver.put_content(paths.upload_data(NAME, upload_id(location)), other)
    done = await instances[2].put(location, params={"digest": f"sha256:{_sha256(data)}"})
    assert done.status == 400, await done.text()
    assert (await done.json())["errors"][0]["detail"]["computed"] == f"sha256:{_sha256(other)}"


async def test_an_unsupported_digest_algorithm_is_refused(make_registry: ClientFactory) -> None:
    client = await make_registry()
    for algorithm in ("md5", "sha256:x", ""):
        params = {"digest-algorithm": algorithm}
        response = await client.post(f"/v2/{NAME}/blobs/uploads/", params=params)
        assert response.status == 400
        assert (await response.json())["errors"][0]["code"] == "DIGEST_INVALID"


async def test_a_state_that_fails_its_check_is_ignored_and_the_data_re_read(
    make_registry: ClientFactory,
) -> None:
    first, second = await make_registry(), await make_registry()
    data = os.urandom(3 * CHUNK)
    other = os.urandom(len(data))
    driver = second.app[STORAGE].driver
    for claimed, expected in ((other, 400), (data, 201)):
        location = await chunked([first], data)
        state = paths.upload_hash_state(NAME, upload_id(location), "sha256", len(data))
        # A state of other bytes under a well-formed but wrong MAC.
        forged = hashlib.sha256(b"not the key").digest() + _exported_state(other)
        await driver.put_content(state, forged)
        digest = "sha256:" + hashlib.sha256(claimed).hexdigest()
        done = await second.put(location, params={"digest": digest})
        assert done.status == expected, await done.text()
        if expected == 400:
            assert (await done.json())["errors"][0]["code"] == "DIGEST_INVALID"
    blob = await first.get(f"/v2/{NAME}/blobs/sha256:{hashlib.sha256(data).hexdigest()}")
    assert await blob.read() == data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _exported_state(data: bytes) -> bytes:
    hasher = ResumableHasher("sha256")
    hasher.update(data)
    return hasher.export()
