"""The in-memory blob-descriptor cache: bounded LRU maps, one per process.

Each instance has its own, so with several instances a deletion on one is not seen by
the others' memory: several instances share the Redis cache instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from registry.oci.digest import Digest
from registry.storage.blobs import BlobDescriptor
from registry.storage.cache.base import BlobDescriptorCache

K = TypeVar("K")
V = TypeVar("V")


class _LRU(OrderedDict[K, V]):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = max(capacity, 1)

    def remember(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)

    def recall(self, key: K) -> V | None:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value


class MemoryBlobDescriptorCache(BlobDescriptorCache):
    def __init__(self, size: int = 10_000) -> None:
        # Keyed by the digest's hex: see "Keys by hex" in registry.oci.digest.
        self._descriptors: _LRU[str, BlobDescriptor] = _LRU(size)
        self._links: _LRU[tuple[str, str], bool] = _LRU(size)

    async def get(self, digest: Digest) -> BlobDescriptor | None:
        return self._descriptors.recall(digest.hex)

    async def put(self, descriptor: BlobDescriptor) -> None:
        self._descriptors.remember(descriptor.digest.hex, descriptor)

    async def forget(self, digest: Digest) -> None:
        self._descriptors.pop(digest.hex, None)

    async def is_linked(self, repository: str, digest: Digest) -> bool:
        return self._links.recall((repository, digest.hex)) is not None

    async def add_link(self, repository: str, digest: Digest) -> None:
        self._links.remember((repository, digest.hex), True)

    async def forget_link(self, repository: str, digest: Digest) -> None:
        self._links.pop((repository, digest.hex), None)
