"""Build the configured blob-descriptor cache (``storage.cache.blobdescriptor``)."""

from __future__ import annotations

from registry.config import RegistryConfig
from registry.storage.cache.base import BlobDescriptorCache
from registry.storage.cache.memory import MemoryBlobDescriptorCache
from registry.storage.cache.redis import RedisBlobDescriptorCache, redis_client


def create_blob_descriptor_cache(config: RegistryConfig) -> BlobDescriptorCache | None:
    """None when no cache is configured."""
    kind = config.storage.cache.blob_descriptor_cache
    if kind == "inmemory":
        return MemoryBlobDescriptorCache(config.storage.cache.blobdescriptorsize)
    if kind == "redis":
        return RedisBlobDescriptorCache(redis_client(config.redis))
    return None
