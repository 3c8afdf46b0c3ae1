"""What a collection costs before its first deletion (reading the repositories, marking,
the online protocol's reads), kept from coming back: counted, not timed, since the
machine is shared. The store is the bench's (``bench/scenarios/gc.py``), one repository
of it: 100 manifests, two in five untagged, written two days ago.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.scenarios.gc import PER_REPOSITORY, seed_gc_store
from registry.storage.driver.base import FileInfo
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.gc import CollectionReport, GarbageCollector
from registry.storage.registry import Registry


async def _collect(root: Path, *, grace: float) -> CollectionReport:
    driver = FilesystemDriver(root, fsync=False)
    try:
        return await GarbageCollector(Registry(driver), delete_untagged=True, grace=grace).run()
    finally:
        await driver.close()


@pytest.fixture
async def store(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, PER_REPOSITORY)
    return root


async def test_the_online_reads_of_lastref_are_not_one_stat_each(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online protocol reads the ``lastref`` of every unmarked blob twice and of
    every untagged manifest twice: 48,000 ``stat`` coroutines on the bench's store,
    about 25 us each. They are now bulk reads of the driver's (``modified_many``),
    one ``os.stat`` each in a thread."""
    stats = 0
    stat = FilesystemDriver.stat

    async def counting(driver: FilesystemDriver, path: str) -> FileInfo:
        nonlocal stats
        stats += 1
        return await stat(driver, path)

    monkeypatch.setattr(FilesystemDriver, "stat", counting)
    report = await _collect(store, grace=3600)
    unmarked = PER_REPOSITORY * 2 // 5 * 5  # 40 untagged manifests and their 4 blobs each
    assert len(report.blobs) == unmarked  # the protocol ran in full and condemned them
    assert stats < 20  # a few of the run's own files (its clock, lease, record)
