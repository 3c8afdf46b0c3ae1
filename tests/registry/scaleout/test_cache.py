"""The blob-descriptor cache: one suite over the in-memory and the Redis implementation
(a real redis-server), then what the registry does with it: invalidation on deletion
(a re-push never hears "already exists") and serving on with Redis stopped."""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from registry.config import RedisConfig
from registry.oci.digest import Digest, parse_digest
from registry.storage.blobs import BlobDescriptor
from registry.storage.cache.base import BlobDescriptorCache
from registry.storage.cache.memory import MemoryBlobDescriptorCache
from registry.storage.cache.redis import RedisBlobDescriptorCache
from shared.redis_client import redis_client
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.support.backing_services import RedisServer


def random_digest() -> Digest:
    return parse_digest("sha256:" + hashlib.sha256(os.urandom(16)).hexdigest())


def fast_client(addr: str) -> Redis:
    timeout = datetime.timedelta(milliseconds=300)
    return redis_client(RedisConfig(addr=addr, dialtimeout=timeout, readtimeout=timeout))


@pytest.fixture(params=["memory", "redis"])
async def cache(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[BlobDescriptorCache]:
    instance: BlobDescriptorCache
    if request.param == "memory":
        instance = MemoryBlobDescriptorCache(100)
    else:
        instance = RedisBlobDescriptorCache(fast_client(redis_server.addr))
    yield instance
    await instance.close()


# --- the shared suite ------------------------------------------------------------------


async def test_descriptors_are_remembered_and_forgotten(cache: BlobDescriptorCache) -> None:
    digest = random_digest()
    assert await cache.get(digest) is None
    descriptor = BlobDescriptor(digest, 1234, "application/vnd.oci.image.layer.v1.tar")
    await cache.put(descriptor)
    assert await cache.get(digest) == descriptor
    assert await cache.get(random_digest()) is None
    await cache.forget(digest)
    assert await cache.get(digest) is None
    await cache.forget(digest)  # forgetting what is not there is fine


async def test_links_are_per_repository(cache: BlobDescriptorCache) -> None:
    digest = random_digest()
    assert not await cache.is_linked("team/app", digest)
    await cache.add_link("team/app", digest)
    assert await cache.is_linked("team/app", digest)
    assert not await cache.is_linked("team/other", digest)
    assert not await cache.is_linked("team/app", random_digest())
    await cache.forget_link("team/app", digest)
    assert not await cache.is_linked("team/app", digest)


async def test_the_descriptor_and_the_links_are_independent(cache: BlobDescriptorCache) -> None:
    digest = random_digest()
    await cache.put(BlobDescriptor(digest, 1))
    await cache.add_link("a", digest)
    await cache.forget_link("a", digest)
    assert await cache.get(digest) == BlobDescriptor(digest, 1)
    await cache.add_link("a", digest)
    await cache.forget(digest)
    assert await cache.is_linked("a", digest)


async def test_the_memory_cache_is_bounded() -> None:
    cache = MemoryBlobDescriptorCache(3)
    digests = [random_digest() for _ in range(5)]
    for digest in digests:
        await cache.put(BlobDescriptor(digest, 1))
        await cache.add_link("r", digest)
    assert [await cache.get(d) is not None for d in digests] == [False, False, True, True, True]
    assert [await cache.is_linked("r", d) for d in digests] == [False, False, True, True, True]


# --- Redis failing ----------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_a_stopped_redis_is_a_miss_never_an_error(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisBlobDescriptorCache(fast_client(own_redis.addr))
    digest = random_digest()
    await cache.put(BlobDescriptor(digest, 7))
    assert await cache.get(digest) == BlobDescriptor(digest, 7)
    own_redis.stop()
    with caplog.at_level(logging.WARNING, "registry.storage.cache"):
        assert await cache.get(digest) is None
        await cache.put(BlobDescriptor(digest, 7))
        assert not await cache.is_linked("r", digest)
        await cache.forget(digest)
    assert "serving from storage" in caplog.text
    await cache.close()


class Tally:
    def __init__(self) -> None:
        self.count = 0.0

    def inc(self, amount: float = 1) -> None:
        self.count += amount


async def test_each_outage_is_logged_once_and_its_end_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    errors = Tally()
    cache = RedisBlobDescriptorCache(
        fast_client(own_redis.addr), cooldown=0.0, where="Redis at test", errors=errors
    )
    digest = random_digest()
    with caplog.at_level(logging.INFO, "registry.storage.cache"):
        for _ in range(2):
            own_redis.stop()
            for _ in range(3):  # every request of an outage goes to storage, unlogged
                assert await cache.get(digest) is None
                await cache.put(BlobDescriptor(digest, 7))
            own_redis.start()  # on the same port, empty
            await cache.put(BlobDescriptor(digest, 7))
            assert await cache.get(digest) == BlobDescriptor(digest, 7)
    await cache.close()
    messages = [record.getMessage() for record in caplog.records]
    down = [m for m in messages if "does not answer" in m]
    assert len(down) == 2 and all("Redis at test" in m for m in down), messages
    assert sum("Redis at test answers again" in m for m in messages) == 2, messages
    assert errors.count == 2 * 3 * 2  # each operation that went to storage, counted


async def test_an_invalidation_missed_while_redis_hangs_is_replayed(
    own_redis: RedisServer,
) -> None:
    cache = RedisBlobDescriptorCache(fast_client(own_redis.addr), cooldown=0.0)
    digest = random_digest()
    await cache.put(BlobDescriptor(digest, 7))
    await cache.add_link("r", digest)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)  # hung: every command times out
    try:
        await cache.forget(digest)
        await cache.forget_link("r", digest)
        assert await cache.get(digest) is None
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    # Redis still holds both entries: the cache must not believe them, and deletes them
    # before it reads anything again.
    assert not await cache.is_linked("r", digest)
    assert await cache.get(digest) is None
    direct = Redis(host="127.0.0.1", port=own_redis.port)
    assert await direct.exists(f"blobs::{digest}", f"repository::r::blobs::{digest}") == 0
    await direct.aclose()
    await cache.close()


# --- in the registry -------------------------------------------------------------------


async def push(client: RegistryClient, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await client.post(f"/v2/{name}/blobs/uploads/?digest={digest}", data=data)
    assert response.status == 201, await response.text()
    return digest


async def test_a_re_push_after_deletion_is_never_told_it_exists(
    make_registry: ClientFactory,
) -> None:
    # Two instances over one bucket and one Redis: one deletes, the other must see it.
    first, second = await make_registry(), await make_registry()
    data = os.urandom(2000)
    digest = await push(first, "team/app", data)
    assert (await first.head(f"/v2/team/app/blobs/{digest}")).status == 200  # cached now
    assert (await second.delete(f"/v2/team/app/blobs/{digest}")).status == 202
    assert (await first.head(f"/v2/team/app/blobs/{digest}")).status == 404
    mount = await first.post(f"/v2/team/app/blobs/uploads/?mount={digest}&from=team/app")
    assert mount.status == 202  # not "already exists": a new upload
    await push(first, "team/app", data)
    assert (await second.head(f"/v2/team/app/blobs/{digest}")).status == 200


async def test_the_registry_keeps_serving_with_redis_stopped(
    make_registry: ClientFactory, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_registry({"REGISTRY_REDIS_ADDR": own_redis.addr})
    data = os.urandom(3000)
    digest = await push(client, "app", data)
    assert (await client.head(f"/v2/app/blobs/{digest}")).status == 200
    own_redis.stop()
    with caplog.at_level(logging.WARNING, "registry.storage.cache"):
        response = await client.get(f"/v2/app/blobs/{digest}")
        assert response.status == 200 and await response.read() == data
        other = await push(client, "app", os.urandom(100))
        assert (await client.head(f"/v2/app/blobs/{other}")).status == 200
        assert (await client.delete(f"/v2/app/blobs/{other}")).status == 202
        assert (await client.head(f"/v2/app/blobs/{other}")).status == 404
    assert "serving from storage" in caplog.text


async def test_a_cached_blob_head_hashes_no_digest_object(
    make_registry: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob HEAD the in-memory cache answers (descriptor, link, the refresh memo) looks
    its digest up by its hex: no ``Digest.__hash__``, a Python call per lookup (four per
    HEAD before)."""
    registry = await make_registry({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "inmemory"})
    digest = await push(registry, "team/app", os.urandom(2000))
    path = f"/v2/team/app/blobs/{digest}"
    assert (await registry.head(path)).status == 200  # cached now
    hashed: list[str] = []
    real_hash = Digest.__hash__

    def noting(self: Digest) -> int:
        hashed.append(self.hex)
        return real_hash(self)

    monkeypatch.setattr(Digest, "__hash__", noting)
    response = await registry.head(path)
    monkeypatch.undo()
    assert response.status == 200
    assert response.headers["Docker-Content-Digest"] == digest
    assert hashed == []
