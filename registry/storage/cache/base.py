"""The blob-descriptor cache interface, shared by the in-memory and Redis caches.

The cache remembers two facts that only change by deletion: a blob's descriptor (by
digest, registry-wide) and that a repository links a blob. It is never the source of
truth: a miss (or a failing backend) means "ask storage", and only positive facts are
kept, so the storage layer must forget them when it deletes what they describe.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from registry.oci.digest import Digest
from registry.storage.blobs import BlobDescriptor


class BlobDescriptorCache(abc.ABC):
    @abc.abstractmethod
    async def get(self, digest: Digest) -> BlobDescriptor | None:
        """The descriptor of a blob the registry stores, or None when unknown here."""

    @abc.abstractmethod
    async def put(self, descriptor: BlobDescriptor) -> None: ...

    @abc.abstractmethod
    async def forget(self, digest: Digest) -> None:
        """The blob's data is gone (deleted or garbage-collected)."""

    @abc.abstractmethod
    async def is_linked(self, repository: str, digest: Digest) -> bool:
        """True only when the repository is known to link the blob (False: ask storage)."""

    @abc.abstractmethod
    async def add_link(self, repository: str, digest: Digest) -> None: ...

    @abc.abstractmethod
    async def forget_link(self, repository: str, digest: Digest) -> None:
        """The repository no longer links the blob (a layer unlinked, a manifest deleted)."""

    async def forget_many(self, digests: Sequence[Digest]) -> None:
        """Many blobs' data is gone (garbage collection); backends batch the work."""
        for digest in digests:
            await self.forget(digest)

    async def forget_links(self, repository: str, digests: Sequence[Digest]) -> None:
        """The repository no longer links any of ``digests``; backends batch the work."""
        for digest in digests:
            await self.forget_link(repository, digest)

    async def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections."""
