"""What the offline collection's wall time was made of, kept from coming back: work that
grew with the square of the untagged manifests, a report whose repr Python 3.11's
``asyncio.run`` builds in full, and deletions left on a few threads of the pool.

Each is checked by what it costs, counted, not timed: the machine is shared.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from bench.scenarios.gc import PER_REPOSITORY, seed_gc_store
from registry.oci.digest import parse_digest
from registry.storage.driver import filesystem
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.gc import CollectionReport, GarbageCollector
from registry.storage.gc_untagged import Deletion, Untagged
from registry.storage.registry import Registry

DIGEST = parse_digest("sha256:" + "ab" * 32)


async def test_untagged_digests_are_gathered_a_fixed_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a collection's candidates were settled, the set of their digests was rebuilt
    for every candidate: 4,000 untagged manifests cost 16 million hashes (19 s of 47 in a
    profile). It is now built a fixed number of times, whatever the store's size."""
    calls = 0
    digests = vars(Untagged)["digests"].fget

    def counting(untagged: Untagged) -> set[object]:
        nonlocal calls
        calls += 1
        result: set[object] = digests(untagged)
        return result

    monkeypatch.setattr(Untagged, "digests", property(counting))
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, PER_REPOSITORY)
    driver = FilesystemDriver(root, fsync=False)
    try:
        # A grace period, as the command's default: the online protocol's reads run too.
        report = await GarbageCollector(Registry(driver), delete_untagged=True, grace=1).run()
    finally:
        await driver.close()
    assert len(report.manifests) == PER_REPOSITORY * 2 // 5  # 40 untagged went
    assert calls <= 4


def test_a_large_report_has_a_short_repr() -> None:
    """``asyncio.run`` on Python 3.11 formats its main task's repr, result included, when
    it restores the SIGINT handler: the generated repr of a 40,000-deletion report took
    seconds at the end of every ``garbage-collect``. The repr now holds counts only."""
    report = CollectionReport(repositories=100, marked=30_000)
    report.blobs = [(DIGEST, 100)] * 20_000
    report.layer_links = [("org/repo", DIGEST)] * 16_000
    report.manifests = [Deletion("org/repo", DIGEST, ("t",), None)] * 4_000
    text = repr(report)
    assert len(text) < 400
    assert "blobs=20000" in text and "layer_links=16000" in text and "manifests=4000" in text


async def test_a_bulk_delete_spreads_over_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep batch of 1,024 paths went to the pool in jobs of 256: four threads of 32,
    on a disk where each rmdir waits for the device. Every thread now takes a share."""
    threads: set[int] = set()
    deleted = filesystem._deleted

    def slow_deleted(full: str) -> int | None:
        threads.add(threading.get_ident())
        time.sleep(0.002)  # a device that waits: every job is in flight at once
        return deleted(full)

    monkeypatch.setattr(filesystem, "_deleted", slow_deleted)
    directories = [f"/d/{index:04d}" for index in range(1024)]
    for directory in directories:
        (tmp_path / directory.lstrip("/")).mkdir(parents=True)
        (tmp_path / directory.lstrip("/") / "link").write_bytes(b"x")
    driver = FilesystemDriver(tmp_path, max_threads=32, fsync=False)
    try:
        sizes = await driver.delete_many(directories)
    finally:
        await driver.close()
    assert sizes == [1] * len(directories)
    assert not any((tmp_path / "d").iterdir())
    assert len(threads) > 16
