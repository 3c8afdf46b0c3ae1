"""A blob-descriptor cache that counts its lookups as hits or misses for the metrics.

Both lookups count: a descriptor by digest (``get``) and a repository's link to a blob
(``is_linked``); a miss is any lookup that sends the caller to storage.
"""

from __future__ import annotations

from typing import Protocol

from registry.oci.digest import Digest
from registry.storage.blobs import BlobDescriptor
from registry.storage.cache.base import BlobDescriptorCache


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class MeteredBlobDescriptorCache(BlobDescriptorCache):
    def __init__(self, inner: BlobDescriptorCache, *, hits: Count, misses: Count) -> None:
        self.inner = inner
        self._hits, self._misses = hits, misses

    async def get(self, digest: Digest) -> BlobDescriptor | None:
        found = await self.inner.get(digest)
        (self._misses if found is None else self._hits).inc()
        return found

    async def put(self, descriptor: BlobDescriptor) -> None:
        await self.inner.put(descriptor)

    async def forget(self, digest: Digest) -> None:
        await self.inner.forget(digest)

    async def is_linked(self, repository: str, digest: Digest) -> bool:
        linked = await self.inner.is_linked(repository, digest)
        (self._hits if linked else self._misses).inc()
        return linked

    async def add_link(self, repository: str, digest: Digest) -> None:
        await self.inner.add_link(repository, digest)

    async def forget_link(self, repository: str, digest: Digest) -> None:
        await self.inner.forget_link(repository, digest)

    async def close(self) -> None:
        await self.inner.close()
