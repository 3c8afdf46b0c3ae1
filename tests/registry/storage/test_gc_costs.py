"""What the offline collection's wall time was made of, kept from coming back: work that
grew with the square of the untagged manifests, a report whose repr Python 3.11's
``asyncio.run`` builds in full, and deletions left on a few threads of the pool.

Each is checked by what it costs, counted, not timed: the machine is shared.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from bench.scenarios.gc import PER_REPOSITORY, seed_gc_store
from registry.oci.digest import parse_digest
from registry.storage.driver import filesystem_delete
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
    deleted = filesystem_delete.deleted

    def slow_deleted(full: str) -> int | None:
        threads.add(threading.get_ident())
        time.sleep(0.002)  # a device that waits: every job is in flight at once
        return deleted(full)

    monkeypatch.setattr(filesystem_delete, "deleted", slow_deleted)
    # In 256 parents, as blobs are in their fan-out directories.
    directories = [f"/d/{index % 256:02x}/{index:04d}" for index in range(1024)]
    for directory in directories:
        (tmp_path / directory.lstrip("/")).mkdir(parents=True)
        (tmp_path / directory.lstrip("/") / "link").write_bytes(b"x")
    driver = FilesystemDriver(tmp_path, max_threads=32, fsync=False)
    try:
        sizes = await driver.delete_many(directories)
    finally:
        await driver.close()
    assert sizes == [1] * len(directories)
    assert not any(any(parent.iterdir()) for parent in (tmp_path / "d").iterdir())
    assert len(threads) > 16


async def test_a_blob_is_deleted_with_four_calls_and_no_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each blob's directory went with a stat of it, a listing (open, two reads, close),
    a stat, an unlink and an rmdir: nine calls where four do (that the directory is not
    a symbolic link, the size of ``data``, its unlink, the rmdir), each relative to the
    parent opened once per run of paths."""
    calls: dict[str, int] = {}

    def counted(name: str) -> None:
        original = getattr(os, name)

        def count(*args: object, **kwargs: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(os, name, count)

    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, PER_REPOSITORY)
    driver = FilesystemDriver(root, max_threads=4, fsync=False)
    registry = Registry(driver)
    try:
        digests = [d async for d in registry.blob_store.all()][:200]
        for name in ("scandir", "lstat", "unlink", "rmdir", "open", "stat"):
            counted(name)
        sizes = await registry.blob_store.delete_many(digests)
    finally:
        await driver.close()
    assert all(size is not None and size > 0 for size in sizes)
    assert not [d async for d in Registry(FilesystemDriver(root)).blob_store.all() if d in digests]
    assert "scandir" not in calls
    assert calls["lstat"] == 2 * len(digests)
    assert calls["unlink"] == calls["rmdir"] == len(digests)
    # One open per parent directory and thread job: far fewer than the blobs.
    assert calls["open"] <= len(digests) // 2


async def _delete_link_directories(root: Path, paths: list[str]) -> None:
    """Make each of ``paths`` a directory holding a one-byte ``link``, then delete them
    all with one ``delete_many`` on a pool of 32 threads."""
    for path in paths:
        (root / path.lstrip("/")).mkdir(parents=True)
        (root / path.lstrip("/") / "link").write_bytes(b"x")
    driver = FilesystemDriver(root, max_threads=32, fsync=False)
    try:
        assert await driver.delete_many(paths) == [1] * len(paths)
    finally:
        await driver.close()


async def test_threads_deleting_at_once_work_in_different_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion holds its parent directory's lock while it waits for the device: 32
    threads in one directory took two to three times as long as in 256. Paths given in
    any order now reach each thread as a run of the same parents."""
    threads_of: dict[str, set[int]] = {}
    deleted = filesystem_delete.deleted

    def recording(full: str) -> int | None:
        threads_of.setdefault(full.rpartition("/")[0], set()).add(threading.get_ident())
        time.sleep(0.001)
        return deleted(full)

    monkeypatch.setattr(filesystem_delete, "deleted", recording)
    parents, per_parent = 32, 16
    # Interleaved: each run of 32 consecutive paths holds one of every parent.
    paths = [f"/p{p:02d}/{n:03d}" for n in range(per_parent) for p in range(parents)]
    await _delete_link_directories(tmp_path, paths)
    assert len(threads_of) == parents
    # Each parent's 16 paths are one thread job's: a job never ends inside a parent.
    assert max(len(threads) for threads in threads_of.values()) == 1


async def test_the_deletions_in_one_directory_are_one_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rmdir holds its parent's lock (``i_rwsem``) for writing, and threads waiting
    for it spin while its holder runs: a piece of one repository's layer links, spread
    over eight threads, spent a fifth of a collection's CPU in
    ``rwsem_down_write_slowpath`` under ``perf``. A parent's paths now go to one thread."""
    threads: set[int] = set()
    deleted = filesystem_delete.deleted

    def recording(full: str) -> int | None:
        threads.add(threading.get_ident())
        return deleted(full)

    monkeypatch.setattr(filesystem_delete, "deleted", recording)
    paths = [f"/repo/_layers/sha256/{n:064x}" for n in range(64)]  # a sweep's piece
    await _delete_link_directories(tmp_path, paths)
    assert len(threads) == 1


async def test_a_directory_that_is_a_symbolic_link_is_deleted_alone(tmp_path: Path) -> None:
    """A layer-link directory that is a symbolic link to another repository's: deleting
    it with the sole-file shortcut removed the other repository's link file through it."""
    root = tmp_path / "root"
    theirs = root / "theirs/_layers/sha256/abc"
    theirs.mkdir(parents=True)
    (theirs / "link").write_text("sha256:abc")
    mine = root / "mine/_layers/sha256"
    mine.mkdir(parents=True)
    (mine / "abc").symlink_to(theirs)
    driver = FilesystemDriver(root, fsync=False)
    try:
        await driver.delete_many(["/mine/_layers/sha256/abc"], sole_file="link")
    finally:
        await driver.close()
    assert not (mine / "abc").is_symlink()
    assert (theirs / "link").read_text() == "sha256:abc"
