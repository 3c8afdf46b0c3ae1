"""Garbage collection: mark what kept manifests reference, sweep every other blob.

Distribution's semantics on Distribution's layout, so a store collected by either
registry is served by both. Mark: every manifest revision of every repository is kept
(with ``delete_untagged``, only those a tag currently points at, the children of kept
indexes, and referrers whose subject is kept); a kept manifest marks itself and every
blob it references. Sweep (``gc_sweep``): untagged manifests are deleted with their tag-history
entries and referrer records, then every unmarked blob and every repository's layer
links to blobs that are no longer marked, together.

Then what failed work left: uploads abandoned for longer than ``upload_age`` (the upload
purge), temporary files of killed writers, and repositories left with nothing at all.

With ``grace`` 0 this is Distribution's offline collector: a blob pushed but not yet
referenced by a manifest is unmarked, so run it while no client pushes. With a grace
period it is safe while clients push: only blobs unreferenced for longer than the grace
period go, under the protocol of ``gc_safety`` (docs/online-gc.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from registry.oci.digest import Digest
from registry.storage import paths
from registry.storage.catalog import REPOSITORY_MARKERS, repository_names
from registry.storage.driver.base import StorageDriver
from registry.storage.errors import BlobUnknown, ManifestUnknown, NameUnknown, PathNotFound
from registry.storage.gc_safety import CollectionSafety, Doom
from registry.storage.gc_sweep import Progress, Sweeper, bounded
from registry.storage.gc_untagged import Deletion, ReadRepository, Untagged
from registry.storage.purge import purge_uploads
from registry.storage.references import (
    References,
    UnreadableManifest,
    every_digest_in,
    references_of,
)
from registry.storage.registry import Registry, Repository

log = logging.getLogger("registry.gc")

# Blobs deleted between two progress reports and two checks of the run's lease: a batch
# must finish within leases.EXPIRY - leases.HOLD (2 s) once begun; 1,024 take ~0.1 s of
# CPU. A collector at idle priority may get well under 1% of a CPU on a busy machine, so
# it checks after every IDLE_SWEEP_BATCH (~6 ms of CPU): a batch's CPU, not its count,
# is what must fit in the margin at the share the collector gets.
SWEEP_BATCH = 1024
IDLE_SWEEP_BATCH = 64


@dataclass
class CollectionReport:
    repositories: int = 0
    marked: int = 0
    manifests: list[Deletion] = field(default_factory=list)
    blobs: list[tuple[Digest, int]] = field(default_factory=list)  # digest and size
    spared: int = 0  # unmarked blobs referenced within the grace period, kept
    layer_links: list[tuple[str, Digest]] = field(default_factory=list)
    uploads_purged: int = 0
    temporaries: int = 0
    empty_repositories: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.blobs)

    def __repr__(self) -> str:
        # Counts only: on Python 3.11 ``asyncio.run`` formats the repr of its main task,
        # result included, when it restores the SIGINT handler (``signal.getsignal``
        # builds an Enum error message from it). The generated repr of a report of
        # 40,000 deletions took seconds of the collection's wall time there.
        return (
            f"CollectionReport(repositories={self.repositories}, marked={self.marked}, "
            f"manifests={len(self.manifests)}, blobs={len(self.blobs)}, "
            f"spared={self.spared}, layer_links={len(self.layer_links)}, "
            f"uploads_purged={self.uploads_purged}, temporaries={self.temporaries}, "
            f"empty_repositories={len(self.empty_repositories)})"
        )


# One line of Distribution's output ("app: marking manifest sha256:...").
Emit = Callable[[str], None]


def _silent(phase: str, done: int, total: int) -> None:
    pass


class GarbageCollector:
    def __init__(
        self,
        registry: Registry,
        *,
        dry_run: bool = False,
        delete_untagged: bool = False,
        upload_age: float | None = None,
        grace: float = 0.0,
        emit: Emit | None = None,
        progress: Progress = _silent,
        sweep_batch: int = SWEEP_BATCH,
    ) -> None:
        self.registry = registry
        self.sweep_batch = sweep_batch
        self.dry_run = dry_run
        self.delete_untagged = delete_untagged
        self.upload_age = upload_age  # seconds; None: leave uploads to the purge
        # None: nothing printed, and no line built (one per blob, link and manifest
        # marked or deleted: 90,000 on a store of 10,000 manifests).
        self.emit = emit
        self.progress = progress
        self.marked: set[Digest] = set()
        self._visited: set[tuple[str, Digest]] = set()  # manifests whose references are marked
        self._temporaries: asyncio.Future[int] | None = None  # the sweep of killed writers'
        self.report = CollectionReport()
        # Which unmarked blobs may go (seconds of grace; 0: every one, offline).
        self.safety = CollectionSafety(registry.driver, grace, dry_run=dry_run)
        # Online: untagged manifests' first lastref reads, for the run's re-read.
        self._manifest_reads: dict[Digest, float | None] = {}

    async def run(self) -> CollectionReport:
        try:
            await self._collect()
        finally:
            if self._temporaries is not None:
                self.report.temporaries = await self._temporaries
        return self.report

    async def _collect(self) -> None:
        await self.safety.start()
        if not self.dry_run:
            # Killed writers' temporaries are found by a walk of the whole store, which the
            # filesystem driver runs in a child process (``apart``): started first, it
            # walks on the other core while this one reads and marks (in a thread of this
            # process it slowed reading and marking by half again, so it used to wait for
            # the end of the sweeps and then added 1-3 s). It removes only files no live
            # writer holds a lock on, so what the sweeps delete meanwhile changes nothing.
            walk = self.registry.driver.remove_leftovers(apart=True)
            self._temporaries = asyncio.ensure_future(walk)
        repositories = await self._read_repositories()
        untagged = await self._mark(repositories)
        unmarked = sorted(
            [d async for d in self.registry.blob_store.all() if d not in self.marked], key=str
        )
        linked = {d for r in repositories.values() for d in r.layers if d not in self.marked}
        try:
            doom = await self.safety.condemn(unmarked, linked, self._manifest_reads)
            if doom.spared_manifests:
                # Referenced since the first read (a tag, an index or a referrer pushed,
                # a HEAD): kept, with all they reference and what keeping them keeps.
                await untagged.settle(doom.spared_manifests, self.marked, self._mark_manifest)
                doom.blobs = [d for d in doom.blobs if d not in self.marked]
                doom.unlink -= self.marked
            self.report.spared = doom.spared
            self.report.marked = len(self.marked)
            self.report.manifests = candidates = untagged.deletions()
            await self._sweep(repositories, candidates, doom)
        finally:
            await self.safety.release()  # only once manifests, blobs and links are gone
        await self._sweep_leftovers(repositories)

    async def _sweep(
        self, repositories: dict[str, ReadRepository], candidates: list[Deletion], doom: Doom
    ) -> None:
        emit = self.emit
        if emit is not None:
            emit(
                f"\n{len(self.marked)} blobs marked, {len(doom.blobs)} blobs and "
                f"{len(candidates)} manifests eligible for deletion"
            )
            for deletion in candidates:
                emit(f"manifest eligible for deletion: {deletion.repository}@{deletion.digest}")
            for digest in doom.blobs:
                emit(f"blob eligible for deletion: {digest}")
        links: list[tuple[ReadRepository, list[Digest]]] = []
        for name, repository in repositories.items():
            doomed = [d for d in sorted(repository.layers, key=str) if d in doom.unlink]
            if emit is not None:
                for digest in doomed:
                    emit(f"{name}: layer link eligible for deletion: {digest}")
            self.report.layer_links += [(name, digest) for digest in doomed]
            if doomed:
                links.append((repository, doomed))
        if self.dry_run:
            sizes = await self._sizes(doom.blobs)
        else:
            sweeper = Sweeper(
                self.registry.blob_store, self.safety.check_lease, self.sweep_batch, self.progress
            )
            await sweeper.manifests(repositories, candidates)
            sizes = await sweeper.blobs_and_links(doom.blobs, links)
        self.report.blobs = [
            (digest, size)
            for digest, size in zip(doom.blobs, sizes, strict=True)
            if size is not None
        ]

    async def _sizes(self, blobs: list[Digest]) -> list[int | None]:
        """What deleting each blob would free (a dry run; 0 for one that is gone)."""
        store = self.registry.blob_store
        sizes: list[int | None] = [0] * len(blobs)

        async def size(index: int) -> None:  # concurrently: one request each on S3
            with contextlib.suppress(BlobUnknown):
                sizes[index] = (await store.stat(blobs[index])).size

        await bounded(size(index) for index in range(len(blobs)))
        return sizes

    # --- reading -------------------------------------------------------------------------

    async def _read_repositories(self) -> dict[str, ReadRepository]:
        driver = self.registry.driver
        # Repositories with only uploads too: an abandoned one may be all they hold.
        markers = (*REPOSITORY_MARKERS, paths.UPLOADS)
        names = [name async for name in repository_names(driver, markers)]
        self.report.repositories = len(names)
        found: dict[str, ReadRepository] = {}
        done = 0

        async def read(name: str) -> None:
            nonlocal done
            found[name] = await self._read_repository(self.registry.repository(name))
            done += 1
            self.progress("reading repositories", done, len(names))

        await bounded(read(name) for name in names)
        return dict(sorted(found.items()))

    async def _read_repository(self, view: Repository) -> ReadRepository:
        revisions = {d async for d in view.blobs.revisions.all()}
        try:
            all_tags = list(await view.tags.all())
        except NameUnknown:
            all_tags = []
        tags_of: dict[Digest, list[str]] = {}
        history_of: dict[Digest, list[str]] = {}
        for tag in all_tags:
            with contextlib.suppress(ManifestUnknown):  # no current link: it points nowhere
                tags_of.setdefault(await view.tags.resolve(tag), []).append(tag)
            if self.delete_untagged:  # only then are manifests deleted
                for digest in await view.tags.history(tag):
                    history_of.setdefault(digest, []).append(tag)
        layers = [d async for d in view.blobs.layers.all()]
        return ReadRepository(view, revisions, all_tags, tags_of, history_of, layers)

    async def _references(self, repository: ReadRepository, digest: Digest) -> References | None:
        """What a manifest names; None when its content is gone (nothing can be known)."""
        try:
            body = await self.registry.blob_store.get(digest)
        except BlobUnknown:
            log.warning(
                "%s: manifest %s has no content; nothing it names is marked",
                repository.view.name,
                digest,
            )
            return None
        try:
            return references_of(body)
        except UnreadableManifest:
            # Not JSON: every digest written in it is kept, rather than none.
            log.warning("%s: manifest %s is unreadable", repository.view.name, digest)
            return every_digest_in(body)

    # --- mark ----------------------------------------------------------------------------

    async def _mark(self, repositories: dict[str, ReadRepository]) -> Untagged:
        """Mark from every kept manifest; the untagged ones left over are returned."""
        untagged = Untagged()
        done = 0
        for name, repository in repositories.items():
            if self.emit is not None:
                self.emit(name)
            for digest in sorted(repository.revisions, key=str):
                if self.delete_untagged and digest not in repository.tags_of:
                    references = await self._references(repository, digest)
                    untagged.add(repository, digest, references.subject if references else None)
                    continue
                await self._mark_manifest(repository, digest)
            done += 1
            self.progress("marking", done, len(repositories))
        # Online, untagged manifests referenced within the grace period are kept too.
        self._manifest_reads = await self.safety.first_reads(untagged.digests)
        fresh = {d for d, t in self._manifest_reads.items() if not self.safety.is_old(t)}
        await untagged.settle(fresh, self.marked, self._mark_manifest)
        still = untagged.digests  # once: the property builds a new set on each call
        self._manifest_reads = {d: t for d, t in self._manifest_reads.items() if d in still}
        return untagged

    async def _mark_manifest(self, repository: ReadRepository, digest: Digest) -> None:
        name = repository.view.name
        if (name, digest) in self._visited:
            return
        self._visited.add((name, digest))
        emit = self.emit
        if emit is not None:
            emit(f"{name}: marking manifest {digest} ")
        self.marked.add(digest)
        references = await self._references(repository, digest)
        if references is None:
            return
        if emit is None:  # what is marked does not depend on the order: only lines do
            self.marked |= references.blobs
            children: Iterable[Digest] = references.manifests
        else:
            for blob in sorted(references.blobs, key=str):
                if blob not in self.marked:
                    self.marked.add(blob)
                    emit(f"{name}: marking blob {blob}")
            children = sorted(references.manifests, key=str)
        for child in children:
            if child in repository.revisions:
                await self._mark_manifest(repository, child)
            elif child not in self.marked:
                self.marked.add(child)
                if emit is not None:
                    emit(f"{name}: marking blob {child}")

    # --- leftovers ----------------------------------------------------------------------

    async def _sweep_leftovers(self, repositories: dict[str, ReadRepository]) -> None:
        driver = self.registry.driver
        if self.upload_age is not None:
            self.report.uploads_purged = await purge_uploads(
                driver, self.upload_age, dry_run=self.dry_run
            )
        if self.safety.online:
            # A client may be pushing into a repository that looks empty: no record
            # protects a whole repository, so only offline collection removes them.
            return
        deleted = {(d.repository, d.digest) for d in self.report.manifests}
        unlinked = set(self.report.layer_links)
        for name, repository in repositories.items():
            kept_revisions = any((name, d) not in deleted for d in repository.revisions)
            kept_layers = any((name, d) not in unlinked for d in repository.layers)
            if kept_revisions or kept_layers or repository.tags:
                continue
            if await _children(driver, paths.uploads_dir(name)):
                continue  # an upload in progress: its repository is not empty
            if self.emit is not None:
                self.emit(f"{name}: empty repository eligible for deletion")
            self.report.empty_repositories.append(name)
            if not self.dry_run:
                await _remove_repository(driver, name)


async def _children(driver: StorageDriver, directory: str) -> list[str]:
    try:
        return await driver.list_dir(directory)
    except PathNotFound:
        return []


async def _remove_repository(driver: StorageDriver, name: str) -> None:
    """Remove a repository's own data, then its directory and the prefixes above it that
    hold nothing else; repositories nested under its name (``name/sub``) stay."""
    for part in (paths.MANIFESTS, paths.LAYERS, paths.UPLOADS, paths.REFERRERS):
        with contextlib.suppress(PathNotFound):
            await driver.delete(paths.repository_part(name, part))
    parts = name.split("/")
    while parts and not await _children(driver, paths.repository("/".join(parts))):
        with contextlib.suppress(PathNotFound):
            await driver.delete(paths.repository("/".join(parts)))
        parts.pop()
