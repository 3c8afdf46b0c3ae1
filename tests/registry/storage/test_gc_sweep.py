"""How the collector's sweep uses the storage: many repositories' links deleted at once,
the bytes freed as the deletions measured them, and no more deletions in flight after
their lease checks than one sweep batch (a small one at idle priority).

Storage where each deletion waits for the device (S3, or a disk that discards every
freed block synchronously) is only kept busy by many deletions in flight: the sweep of
16,000 layer links took 26 to 70 s on such a disk, one repository at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.scenarios.gc import PER_REPOSITORY, seed_gc_store
from registry.storage.driver.base import StorageUnavailable
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.gc import IDLE_SWEEP_BATCH, GarbageCollector
from registry.storage.registry import Registry

REPOSITORIES = 4
SLOW_STORAGE = 0.05  # seconds each delete_many waits before deleting


class SlowDeletesDriver(FilesystemDriver):
    """The filesystem driver, with storage that is slow to delete, counting how many
    deletions of layer links are in flight at once, whether blobs and layer links were
    ever deleted at the same time, and how many paths of any kind were in flight."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.in_flight = 0
        self.most_in_flight = 0
        self.blobs_in_flight = 0
        self.blobs_beside_links = False
        self.paths_in_flight = 0
        self.most_paths_in_flight = 0

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        layers = any("/_layers/" in path for path in paths)
        blobs = any("/blobs/" in path for path in paths)
        self.in_flight += layers
        self.blobs_in_flight += blobs
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.blobs_beside_links |= self.in_flight > 0 and self.blobs_in_flight > 0
        self.paths_in_flight += len(paths)
        self.most_paths_in_flight = max(self.most_paths_in_flight, self.paths_in_flight)
        try:
            await asyncio.sleep(SLOW_STORAGE)
            return await super().delete_many(paths, sole_file=sole_file)
        finally:
            self.in_flight -= layers
            self.blobs_in_flight -= blobs
            self.paths_in_flight -= len(paths)


def layer_links(root: Path) -> set[tuple[str, str]]:
    """Every layer link in the store: (repository, hex digest)."""
    repositories = root / "docker/registry/v2/repositories"
    return {
        (str(link.parent.parent.parent.parent.relative_to(repositories)), link.parent.name)
        for link in repositories.glob("*/*/_layers/sha256/*/link")
    }


def blob_sizes(root: Path) -> dict[Path, int]:
    return {
        data.parent: data.stat().st_size
        for data in (root / "docker/registry/v2/blobs").glob("*/*/*/data")
    }


async def test_layer_links_of_many_repositories_are_deleted_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, REPOSITORIES * PER_REPOSITORY)
    before = blob_sizes(root)
    driver = SlowDeletesDriver(root)
    try:
        report = await GarbageCollector(Registry(driver), delete_untagged=True).run()
    finally:
        await driver.close()

    # Two manifests in five are untagged: each leaves its config and three layers.
    assert len(report.layer_links) == REPOSITORIES * PER_REPOSITORY * 2 // 5 * 4
    # Each repository's 160 links in pieces of SWEEP_BATCH / CONCURRENCY (64), the
    # repositories' pieces in turn: one repository at a time before.
    assert driver.most_in_flight >= REPOSITORIES
    after = blob_sizes(root)
    assert len(after) == len(before) * 3 // 5
    gone = {directory: size for directory, size in before.items() if directory not in after}
    assert {str(digest.hex) for digest, _ in report.blobs} == {d.name for d in gone}
    assert report.bytes_freed == sum(gone.values())


async def test_blobs_and_layer_links_are_deleted_together(tmp_path: Path) -> None:
    """The blob sweep and the layer-link sweep ran one after the other, each leaving the
    storage idle at its tail; they are one stream of pieces now, under the same lease
    checks, and delete exactly what they deleted one after the other."""
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, REPOSITORIES * PER_REPOSITORY)
    before = blob_sizes(root)
    links_before = layer_links(root)
    driver = SlowDeletesDriver(root)
    try:
        report = await GarbageCollector(Registry(driver), delete_untagged=True).run()
    finally:
        await driver.close()
    assert driver.blobs_beside_links
    after = blob_sizes(root)
    gone = {directory.name for directory in before if directory not in after}
    # Each untagged manifest (2 in 5) took itself, its config and its three layers.
    assert len(gone) == REPOSITORIES * PER_REPOSITORY * 2 // 5 * 5
    assert {str(digest.hex) for digest, _ in report.blobs} == gone
    # Exactly the links of the deleted blobs went, and every other link stayed.
    assert layer_links(root) == {(r, d) for r, d in links_before if d not in gone}
    assert {(r, str(d.hex)) for r, d in report.layer_links} == links_before - layer_links(root)


async def test_an_idle_priority_sweep_begins_one_small_batch_per_lease_check(
    tmp_path: Path,
) -> None:
    """At idle priority a collector may get well under 1% of a CPU: what it deletes after
    a lease check must be a few milliseconds of work (docs/online-gc.md), so at most
    IDLE_SWEEP_BATCH deletions are in flight, blobs and layer links alike."""
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, REPOSITORIES * PER_REPOSITORY)
    before = blob_sizes(root)
    driver = SlowDeletesDriver(root)
    try:
        collector = GarbageCollector(
            Registry(driver), delete_untagged=True, sweep_batch=IDLE_SWEEP_BATCH
        )
        report = await collector.run()
    finally:
        await driver.close()
    assert driver.most_paths_in_flight <= IDLE_SWEEP_BATCH
    # And it all went, as with the larger batches.
    assert len(report.layer_links) == REPOSITORIES * PER_REPOSITORY * 2 // 5 * 4
    assert len(blob_sizes(root)) == len(before) * 3 // 5


class FailingDeletesDriver(FilesystemDriver):
    """The filesystem driver whose first blob deletion fails (S3 answering 503), counting
    the blob deletions still running or begun once the failure reached the sweep's
    caller."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.failed = False
        self.sweep_returned = False
        self.after_return = 0

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        if not any("/blobs/" in path for path in paths):
            return await super().delete_many(paths, sole_file=sole_file)
        try:
            await asyncio.sleep(SLOW_STORAGE * (1 + len(paths) % 3))
            if not self.failed:
                self.failed = True
                raise StorageUnavailable("DeleteObjects failed")
            return await super().delete_many(paths, sole_file=sole_file)
        finally:
            self.after_return += self.sweep_returned


async def test_after_a_failed_piece_no_deletion_runs_once_the_sweep_has_ended(
    tmp_path: Path,
) -> None:
    """The collector clears its record and drops its lease when the sweep ends, failed or
    not: a deletion still running or begun after that is unprotected (a push is no longer
    held back), so the other pieces must stop and end before the failure is raised."""
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, REPOSITORIES * PER_REPOSITORY)
    driver = FailingDeletesDriver(root)
    try:
        # Small batches: many pieces, most not begun when the first one fails.
        collector = GarbageCollector(Registry(driver), delete_untagged=True, sweep_batch=32)
        with pytest.raises(StorageUnavailable):
            await collector.run()
        driver.sweep_returned = True
        await asyncio.sleep(10 * SLOW_STORAGE)  # what was left running would begin now
        assert driver.after_return == 0
    finally:
        await driver.close()
