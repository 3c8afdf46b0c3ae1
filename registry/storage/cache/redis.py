"""The Redis blob-descriptor cache (``redis.asyncio``), shared by every instance.

Never the source of truth. A Redis error sends the request to storage; after an error the
cache is bypassed for a second, so a Redis that is down or hung costs one timeout, not one
per request. An outage is logged once, when it starts (a warning), and once when Redis
answers again (info), however many requests it touched; ``errors`` counts each operation
that went to storage for want of Redis (the registry's metric). Forgetting is never
skipped: an invalidation that fails is kept, and this process reads nothing from Redis
until the kept deletions have gone through. Entries also expire after a day, a backstop
for an invalidation lost with its process.

Keys: ``blobs::<digest>`` (a hash: digest, size, mediatype) and
``repository::<name>::blobs::<digest>`` (present when the repository links the blob).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from registry.oci.digest import Digest
from registry.storage.blobs import BlobDescriptor
from registry.storage.cache.base import BlobDescriptorCache

log = logging.getLogger("registry.storage.cache")

T = TypeVar("T")
ENTRY_SECONDS = 24 * 3600
MAX_PENDING = 100_000
INVALIDATE_BATCH = 1000  # keys per DEL when garbage collection forgets many


def _blob_key(digest: Digest) -> str:
    return f"blobs::{digest}"


def _link_key(repository: str, digest: Digest) -> str:
    return f"repository::{repository}::blobs::{digest}"


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _NoCount:
    def inc(self, amount: float = 1) -> None:
        pass


class RedisBlobDescriptorCache(BlobDescriptorCache):
    def __init__(
        self,
        client: Redis,
        *,
        cooldown: float = 1.0,
        where: str = "",
        errors: Count | None = None,
    ) -> None:
        self._redis = client
        self._cooldown = cooldown
        self._where = where or "Redis"
        self._errors = errors or _NoCount()
        self._down_until = 0.0
        self._failing = False  # an outage is on: logged when it began, not since
        self._pending: set[str] = set()  # invalidations Redis has not heard yet
        self._reads_disabled = False

    def _failed(self, operation: str, error: BaseException) -> None:
        self._down_until = time.monotonic() + self._cooldown
        self._errors.inc()
        if not self._failing:
            self._failing = True
            log.warning(
                "blob-descriptor cache: %s does not answer (%s failed: %s); serving from "
                "storage until it does",
                self._where,
                operation,
                type(error).__name__,
            )

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("blob-descriptor cache: %s answers again", self._where)

    async def _run(
        self, operation: str, command: Callable[[Redis], Awaitable[T]], fallback: T
    ) -> T:
        if self._reads_disabled or time.monotonic() < self._down_until:
            self._errors.inc()
            return fallback
        try:
            if self._pending:
                # Redis is back: first tell it what it missed.
                await self._redis.delete(*self._pending)
                self._pending.clear()
            result = await command(self._redis)
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(operation, error)
            return fallback
        self._answered()
        return result

    async def _invalidate(self, *keys: str) -> None:
        for start in range(0, len(keys), INVALIDATE_BATCH):  # one DEL per batch of keys
            batch = keys[start : start + INVALIDATE_BATCH]
            try:
                await self._redis.delete(*batch)
                self._answered()
            except (RedisError, OSError, TimeoutError) as error:
                self._failed("DEL", error)
                self._pending.update(keys[start:])
                if len(self._pending) > MAX_PENDING and not self._reads_disabled:
                    self._reads_disabled = True
                    log.error("too many Redis invalidations pending; no longer reading the cache")
                return

    async def get(self, digest: Digest) -> BlobDescriptor | None:
        async def read(redis: Redis) -> BlobDescriptor | None:
            fields = await redis.hgetall(_blob_key(digest))
            if not fields or b"size" not in fields:
                return None
            raw = fields.get(b"mediatype", b"")
            media_type = (
                raw.decode() if isinstance(raw, bytes) else raw
            ) or "application/octet-stream"
            return BlobDescriptor(digest, int(fields[b"size"]), media_type)

        return await self._run("HGETALL", read, None)

    async def put(self, descriptor: BlobDescriptor) -> None:
        key = _blob_key(descriptor.digest)

        async def write(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "digest": str(descriptor.digest),
                        "size": str(descriptor.size),
                        "mediatype": descriptor.media_type,
                    },
                )
                pipe.expire(key, ENTRY_SECONDS)
                await pipe.execute()

        await self._run("HSET", write, None)

    async def forget(self, digest: Digest) -> None:
        await self._invalidate(_blob_key(digest))

    async def is_linked(self, repository: str, digest: Digest) -> bool:
        key = _link_key(repository, digest)

        async def read(redis: Redis) -> bool:
            return bool(await redis.exists(key))

        return await self._run("EXISTS", read, False)

    async def add_link(self, repository: str, digest: Digest) -> None:
        key = _link_key(repository, digest)

        async def write(redis: Redis) -> None:
            await redis.set(key, b"1", ex=ENTRY_SECONDS)

        await self._run("SET", write, None)

    async def forget_link(self, repository: str, digest: Digest) -> None:
        await self._invalidate(_link_key(repository, digest))

    async def forget_many(self, digests: Sequence[Digest]) -> None:
        await self._invalidate(*(_blob_key(digest) for digest in digests))

    async def forget_links(self, repository: str, digests: Sequence[Digest]) -> None:
        await self._invalidate(*(_link_key(repository, digest) for digest in digests))

    async def close(self) -> None:
        await self._redis.aclose()
