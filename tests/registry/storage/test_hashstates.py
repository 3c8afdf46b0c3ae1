"""Resumable hash states: exported and restored at any chunking they give hashlib's digest,
and a stored state that was tampered with, truncated, moved or written under another
secret, or computed over another version of the data, is never used (it reads as
missing, so the upload is re-read instead)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.storage import paths
from registry.storage.driver.base import StorageDriver
from registry.storage.hashstates import HashStateStore, ResumableHasher
from tests.registry.storage.test_driver_conformance import DRIVER_FACTORIES

NAME, UPLOAD = "team/app", "0b6c1a4e-3f3e-4c55-9b2a-6d0f6f3e8a11"
VERSION = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # of the data the state was computed over
OTHER_UPLOAD = "9d2b3c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
SECRET = b"shared-secret"

# Chunks of 0 and 1 bytes, chunks around the 64- and 128-byte block sizes, and larger.
chunk = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.binary(min_size=55, max_size=130),
    st.binary(max_size=3000),
)


@settings(max_examples=200, deadline=None)
@given(algorithm=st.sampled_from(["sha256", "sha512"]), chunks=st.lists(chunk, max_size=12))
def test_a_state_handed_on_after_every_chunk_gives_hashlibs_digest(
    algorithm: str, chunks: list[bytes]
) -> None:
    hasher = ResumableHasher(algorithm)
    for piece in chunks:
        restored = ResumableHasher.restore(algorithm, hasher.export())
        assert restored is not None
        restored.update(piece)
        restored.hexdigest()  # finalizing leaves the running state alone
        hasher = restored.copy()
    assert hasher.hexdigest() == hashlib.new(algorithm, b"".join(chunks)).hexdigest()


@pytest.fixture(params=[name for name in sorted(DRIVER_FACTORIES) if name != "inmemory"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    instance = await DRIVER_FACTORIES[request.param](tmp_path)
    yield instance
    await instance.close()


def hashed(algorithm: str, data: bytes) -> ResumableHasher:
    hasher = ResumableHasher(algorithm)
    hasher.update(data)
    return hasher


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_another_instance_resumes_a_stored_state(
    driver: StorageDriver, algorithm: str
) -> None:
    await HashStateStore(driver, SECRET).save(NAME, UPLOAD, 5, VERSION, hashed(algorithm, b"hello"))
    resumed = await HashStateStore(driver, SECRET).load(NAME, UPLOAD, algorithm, 5, VERSION)
    assert resumed is not None
    resumed.update(b" world")
    assert resumed.hexdigest() == hashlib.new(algorithm, b"hello world").hexdigest()


async def test_a_state_is_used_only_where_it_was_saved(driver: StorageDriver) -> None:
    store = HashStateStore(driver, SECRET)
    await store.save(NAME, UPLOAD, 5, VERSION, hashed("sha256", b"hello"))
    assert await store.load(NAME, UPLOAD, "sha256", 6, VERSION) is None  # the data grew since
    # Other bytes at the same offset (a chunk that won a race against the one hashed).
    assert await store.load(NAME, UPLOAD, "sha256", 5, "another version") is None
    assert await store.load(NAME, UPLOAD, "sha512", 5, VERSION) is None
    assert await store.load(NAME, UPLOAD, "sha384", 5, VERSION) is None  # not resumable at all
    saved = await driver.get_content(paths.upload_hash_state(NAME, UPLOAD, "sha256", 5))
    # The same bytes copied to another offset, upload or repository do not verify there.
    for name, upload, offset in ((NAME, UPLOAD, 6), (NAME, OTHER_UPLOAD, 5), ("x/y", UPLOAD, 5)):
        await driver.put_content(paths.upload_hash_state(name, upload, "sha256", offset), saved)
        assert await store.load(name, upload, "sha256", offset, VERSION) is None
    assert (
        await HashStateStore(driver, b"another secret").load(NAME, UPLOAD, "sha256", 5, VERSION)
        is None
    )
    # Without a configured secret a process trusts only its own states.
    assert await HashStateStore(driver, None).load(NAME, UPLOAD, "sha256", 5, VERSION) is None


async def test_a_tampered_or_truncated_state_reads_as_missing(driver: StorageDriver) -> None:
    store = HashStateStore(driver, SECRET)
    await store.save(NAME, UPLOAD, 5, VERSION, hashed("sha256", b"hello"))
    path = paths.upload_hash_state(NAME, UPLOAD, "sha256", 5)
    saved = await driver.get_content(path)
    forged = hashed("sha256", b"HELLO").export()  # a valid state of other bytes
    for content in (
        saved[:-1],
        saved + b"\x00",
        saved[:32] + forged,
        saved[:-1] + bytes([saved[-1] ^ 1]),
        bytes([saved[0] ^ 1]) + saved[1:],
        b"",
        b"\x80\x04garbage" * 1000,  # a pickle header is no different from any garbage
    ):
        await driver.put_content(path, content)
        assert await store.load(NAME, UPLOAD, "sha256", 5, VERSION) is None
    await driver.put_content(path, saved)
    assert await store.load(NAME, UPLOAD, "sha256", 5, VERSION) is not None
