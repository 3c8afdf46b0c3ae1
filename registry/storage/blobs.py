"""Blobs: one content-addressed copy shared by every repository, linked per repository.

A blob becomes visible only by an atomic move of verified data to its final path, so a
reader can never see half a blob; a repository sees a blob only through its link.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.oci.digest import Digest
from registry.storage import paths
from registry.storage.driver.base import Content, PathNotFound, StorageDriver
from registry.storage.driver.steps import Move, Put
from registry.storage.errors import BlobUnknown
from registry.storage.gc_safety import BlobGuard, CollectionBusy
from registry.storage.links import digest_tree, layer_links, revision_links

if TYPE_CHECKING:
    from registry.storage.cache.base import BlobDescriptorCache


@dataclass(frozen=True, slots=True)
class BlobDescriptor:
    digest: Digest
    size: int
    media_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class LocalBlob:
    """The blob is this local file: send it with the kernel's sendfile."""

    path: Path


@dataclass(frozen=True, slots=True)
class StreamedBlob:
    """The blob's bytes from the requested offset, as the backend streams them."""

    chunks: AsyncGenerator[bytes, None]  # close it (aclosing) when done with it


@dataclass(frozen=True, slots=True)
class RedirectedBlob:
    """The client may fetch the blob from this URL directly (``storage.redirect``)."""

    url: str


BlobSource = LocalBlob | StreamedBlob | RedirectedBlob


class BlobStore:
    """The registry-wide store of blob data, by digest. ``cache`` (a blob-descriptor
    cache, set by the app) answers stats first; storage stays the source of truth.
    ``guard`` keeps pushes safe from online garbage collection (``gc_grace`` seconds)."""

    def __init__(self, driver: StorageDriver, gc_grace: float = 0.0) -> None:
        self.driver = driver
        self.cache: BlobDescriptorCache | None = None
        self.guard = BlobGuard(driver, gc_grace)

    async def stat(self, digest: Digest) -> BlobDescriptor:
        if self.cache is not None and (cached := await self.cache.get(digest)) is not None:
            return cached
        try:
            info = await self.driver.stat(paths.blob_data(digest))
        except PathNotFound:
            raise BlobUnknown(digest) from None
        descriptor = BlobDescriptor(digest, info.size)
        if self.cache is not None:
            await self.cache.put(descriptor)
        return descriptor

    async def exists(self, digest: Digest) -> bool:
        try:
            await self.stat(digest)
        except BlobUnknown:
            return False
        return True

    async def get(self, digest: Digest) -> bytes:
        try:
            return await self.driver.get_content(paths.blob_data(digest))
        except PathNotFound:
            raise BlobUnknown(digest) from None

    async def open(self, digest: Digest, offset: int, method: str) -> BlobSource:
        """Where the blob's content comes from for a ``method`` request: a redirect when
        the backend offers one (``storage.redirect``), else a local file, else a stream
        from ``offset``."""
        data = paths.blob_data(digest)
        url = await self.driver.redirect_url(data, method)
        if url is not None:
            return RedirectedBlob(url)
        local = self.driver.local_path(data)
        if local is not None:
            return LocalBlob(local)
        return StreamedBlob(self.driver.reader(data, offset))

    def reader(self, digest: Digest, offset: int) -> AsyncGenerator[bytes, None]:
        """The blob's bytes from ``offset`` as a stream, wherever the backend keeps them."""
        return self.driver.reader(paths.blob_data(digest), offset)

    async def put(self, digest: Digest, content: bytes) -> None:
        """Store small, already verified content (manifests) under its digest."""
        await self.driver.put_content(paths.blob_data(digest), content)

    def adoption(self, source_path: str, digest: Digest, verified: Content | None = None) -> Move:
        """The step that moves verified upload data to the blob's final path in one
        atomic rename (run by the driver's ``run_steps``, with the rest of a commit);
        ``verified``, the content the digest was checked over, only if the data still
        is that content (the driver's ContentChanged if not).

        When two clients push the same blob at once both moves succeed: the content is
        identical by its digest, and the last rename simply replaces the first.
        """
        return Move(source_path, paths.blob_data(digest), verified)

    async def delete(self, digest: Digest) -> None:
        # Forgotten before and after: a stat racing the delete cannot leave it cached.
        await self.forget(digest)
        try:
            await self.driver.delete(paths.blob_dir(digest))
        except PathNotFound:
            raise BlobUnknown(digest) from None
        finally:
            await self.forget(digest)

    async def delete_many(self, digests: Sequence[Digest]) -> list[int | None]:
        """Delete many blobs at once (garbage collection): the bytes each freed, or None
        for one that was not there. Sized by the deletion itself: no stat per blob."""
        await self._forget_many(digests)
        try:
            return await self.driver.delete_many(
                [paths.blob_dir(d) for d in digests], sole_file=paths.DATA
            )
        finally:
            await self._forget_many(digests)

    async def _forget_many(self, digests: Sequence[Digest]) -> None:
        if self.cache is not None:
            await self.cache.forget_many(digests)

    async def forget(self, digest: Digest) -> None:
        if self.cache is not None:
            await self.cache.forget(digest)

    async def all(self) -> AsyncIterator[Digest]:
        """Every blob in the store (in no particular order)."""
        async for digest in digest_tree(self.driver, paths.BLOBS, depth=1):
            yield digest


class LinkedBlobs:
    """The blobs one repository may see: layers and configs it was given, and its
    manifests (a manifest is also fetchable as a blob, as with Distribution)."""

    def __init__(self, name: str, store: BlobStore) -> None:
        self.name = name
        self.store = store
        self.layers = layer_links(name, store.driver)
        self.revisions = revision_links(name, store.driver)

    async def is_linked(self, digest: Digest, *, cached: bool = True) -> bool:
        """Whether the repository links the blob; ``cached=False`` asks storage only
        (after garbage collection may have run, the cache can be behind)."""
        cache = self.store.cache
        if cached and cache is not None and await cache.is_linked(self.name, digest):
            return True
        if await self.layers.exists(digest) or await self.revisions.exists(digest):
            if cache is not None:
                await cache.add_link(self.name, digest)
            return True
        return False

    async def stat(self, digest: Digest) -> BlobDescriptor:
        if not await self.is_linked(digest):
            raise BlobUnknown(digest)
        return await self.store.stat(digest)

    async def check(self, digest: Digest) -> BlobDescriptor:
        """``stat`` for a client deciding whether to upload (HEAD): a yes also refreshes
        the blob's last-referenced time, so collection spares it for the grace period."""
        descriptor = await self.stat(digest)
        if not await self.store.guard.noticed(digest):
            await self.store.forget(digest)  # the cache said yes; storage says gone
            raise BlobUnknown(digest)
        return descriptor

    async def open(self, descriptor: BlobDescriptor, offset: int, method: str) -> BlobSource:
        """The content of a blob this repository links (``stat`` it first)."""
        return await self.store.open(descriptor.digest, offset, method)

    async def link(self, digest: Digest) -> None:
        await self.layers.write(digest)

    def linking(self, digest: Digest) -> Put:
        """``link`` as a step, for a caller that runs it with others in one go; once it
        has run, ``linked`` tells the cache."""
        return self.layers.writing(digest)

    async def linked(self, digest: Digest) -> None:
        """The repository now links the blob (a ``linking`` step ran): remembered, as
        Distribution's linked blob store does after a link, so that the manifest PUT
        that follows an upload finds its blobs without a ``stat`` of each link (its
        check in storage, ``is_linked(cached=False)``, still makes one)."""
        if self.store.cache is not None:
            await self.store.cache.add_link(self.name, digest)

    async def unlink(self, digest: Digest) -> None:
        await self.forget(digest)
        try:
            if not await self.layers.delete(digest):
                raise BlobUnknown(digest)
        finally:
            await self.forget(digest)

    async def forget(self, digest: Digest) -> None:
        """Drop the cached link (a layer unlinked, a manifest revision deleted), so the
        next question goes to storage and a re-push is never told "already exists"."""
        if self.store.cache is not None:
            await self.store.cache.forget_link(self.name, digest)

    async def forget_many(self, digests: Sequence[Digest]) -> None:
        """``forget`` for many digests at once (garbage collection)."""
        if self.store.cache is not None:
            await self.store.cache.forget_links(self.name, digests)

    async def mount_from(self, source: LinkedBlobs, digest: Digest) -> BlobDescriptor | None:
        """Link a blob another repository has; None when it has not (or it is gone)."""
        if not await source.is_linked(digest):
            return None
        try:
            # Refreshed and checked under garbage collection's protocol before linking.
            if (await self.store.guard.secure([digest])).missing:
                return None
        except CollectionBusy:
            return None  # being collected: the client uploads it instead
        await self.link(digest)
        return await self.store.stat(digest)
