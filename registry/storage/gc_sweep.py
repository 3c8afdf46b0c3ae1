"""The deleting half of a collection's sweep: condemned manifests first, then the
condemned blobs and layer links together, in one stream of small pieces.

Every piece begins with a check of the run's lease (docs/online-gc.md), and at most
CONCURRENCY pieces are in flight, so no more than one sweep batch of deletions is ever
begun under one check, whichever kind they are.

Why the blobs and the links go together: on storage where each deletion waits for the
device (a disk that discards every freed block, S3) the time is in the waits, and one
sweep after another left the device idle at each sweep's tail. Manifests stay first: a
doomed manifest's blobs must not go while its revision can still be read (no manifest
a client can fetch names a missing blob), and the links only name blobs the run deletes
under its record. The pieces are ordered so that deletions in flight at once are in
different directories: a deletion holds its parent directory's lock while it waits (see
``FilesystemDriver.delete_many``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from registry.oci.digest import Digest
from registry.storage.blobs import BlobStore
from registry.storage.gc_untagged import Deletion, ReadRepository

_T = TypeVar("_T")

# Pieces in flight at once: enough to keep the driver's threads (or S3) busy.
CONCURRENCY = 16

# (what is happening, how many done, how many in all or 0 when unknown)
Progress = Callable[[str, int, int], None]


@dataclass
class Sweeper:
    """Deletes what a run condemned, ``batch`` deletions at most per lease check."""

    store: BlobStore
    check_lease: Callable[[], None]
    batch: int
    progress: Progress

    def pieces(self, items: Sequence[_T]) -> list[Sequence[_T]]:
        """``items`` in pieces deleted concurrently (CONCURRENCY at once), each after its
        own lease check: together at most one sweep batch is in flight."""
        size = max(1, self.batch // CONCURRENCY)
        return [items[start : start + size] for start in range(0, len(items), size)]

    async def manifests(
        self, repositories: dict[str, ReadRepository], candidates: list[Deletion]
    ) -> None:
        """Delete untagged manifests: their tag-history entries, referrer records and
        revision links, each repository's in pieces, many repositories at once."""
        by_repository: dict[str, list[Deletion]] = {}
        for deletion in candidates:
            by_repository.setdefault(deletion.repository, []).append(deletion)
        await bounded(
            self._delete_manifests(repositories[name], piece)
            for name, doomed in by_repository.items()
            for piece in self.pieces(doomed)
        )

    async def _delete_manifests(
        self, repository: ReadRepository, doomed: Sequence[Deletion]
    ) -> None:
        self.check_lease()
        view = repository.view
        await view.tags.forget_revisions([(t, d.digest) for d in doomed for t in d.tags])
        for deletion in doomed:
            if deletion.subject is not None:
                await view.referrers.remove(deletion.subject, deletion.digest)
        digests = [deletion.digest for deletion in doomed]
        await view.blobs.forget_many(digests)
        await view.blobs.revisions.delete_many(digests)
        await view.blobs.forget_many(digests)

    async def blobs_and_links(
        self, blobs: Sequence[Digest], links: Sequence[tuple[ReadRepository, list[Digest]]]
    ) -> list[int | None]:
        """Delete ``blobs`` and each repository's layer ``links`` together; the bytes
        each blob freed, or None for one already gone, in the order given."""
        sizes: list[int | None] = [None] * len(blobs)
        total = len(blobs) + sum(len(digests) for _, digests in links)
        done = 0

        def advanced(count: int) -> None:
            nonlocal done
            done += count
            self.progress("deleting blobs and layer links", done, total)

        async def delete_blobs(indexes: Sequence[int]) -> None:
            self.check_lease()
            freed = await self.store.delete_many([blobs[i] for i in indexes])
            for index, size in zip(indexes, freed, strict=True):
                sizes[index] = size
            advanced(len(indexes))

        async def unlink(repository: ReadRepository, doomed: Sequence[Digest]) -> None:
            self.check_lease()
            view = repository.view.blobs
            await view.forget_many(doomed)
            await view.layers.delete_many(doomed)
            await view.forget_many(doomed)
            advanced(len(doomed))

        # Blobs by the hex digits after the fan-out's two: a piece then spans as many
        # fan-out directories as it has blobs. Links: one piece of each repository in
        # turn, so the pieces in flight are in different repositories' directories.
        spread = sorted(range(len(blobs)), key=lambda i: blobs[i].hex[2:])
        blob_jobs = (delete_blobs(piece) for piece in self.pieces(spread))
        link_jobs = (
            unlink(repository, piece)
            for repository, piece in alternate(
                [(repository, piece) for piece in self.pieces(digests)]
                for repository, digests in links
            )
        )
        await bounded(alternate([blob_jobs, link_jobs]))
        return sizes


def alternate(sources: Iterable[Iterable[_T]]) -> Iterator[_T]:
    """One item of each source in turn, until every source is exhausted."""
    iterators = [iter(source) for source in sources]
    while iterators:
        still = []
        for iterator in iterators:
            for item in itertools.islice(iterator, 1):
                still.append(iterator)
                yield item
        iterators = still


async def bounded(jobs: Iterable[Awaitable[None]]) -> None:
    """Run ``jobs`` with at most CONCURRENCY at once, taking each from the iterable only
    when a worker is free: a generator of a million jobs never exists all at once.

    After the first failure no worker takes another job, and the failure is raised only
    once every job in flight has ended: a sweep's caller clears its record and drops its
    lease when this returns, and no deletion may begin or still run after that.
    """
    pending = iter(jobs)
    failures: list[Exception] = []

    async def worker() -> None:
        for job in pending:
            if failures:
                close = getattr(job, "close", None)  # a coroutine never awaited: no warning
                if close is not None:
                    close()
                return
            try:
                await job
            except Exception as error:  # raised below, once every job has ended
                failures.append(error)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if failures:
        raise failures[0]
