"""The filesystem driver's ``run_steps`` with flushing on, on a journalled ext4 (a real
one, loop-mounted), where it stages (``filesystem_staged``): what a failing step leaves
behind, a staging directory it cannot use, and a filesystem mounted inside the store
after the driver first looked."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.storage.driver.base import PathNotFound
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.filesystem_staged import STAGING
from registry.storage.driver.steps import Delete, Move, Put
from tests.support.ext4 import mounted_ext4
from tests.support.tmpfs import mounted_tmpfs


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[FilesystemDriver]:
    with mounted_ext4(tmp_path) as journaled:
        instance = FilesystemDriver(journaled / "root", max_threads=4)
        try:
            yield instance
        finally:
            await instance.close()


def _staged(driver: FilesystemDriver) -> list[str]:
    staging = driver.root / STAGING
    return sorted(os.listdir(staging)) if staging.is_dir() else []


async def test_a_commit_lands_whole_through_the_staging_directory(
    driver: FilesystemDriver,
) -> None:
    writer = await driver.writer("/up/1/data")
    await writer.write(b"blob")
    await writer.close()
    await driver.run_steps(
        [Move("/up/1/data", "/blobs/b/data"), Put("/links/b/link", b"b"), Delete("/up/1")]
    )
    assert await driver.get_content("/blobs/b/data") == b"blob"
    assert await driver.get_content("/links/b/link") == b"b"
    assert not (driver.root / "up/1").exists()
    assert (driver.root / STAGING).is_dir()  # it was staged there
    assert _staged(driver) == []


async def test_a_missing_source_leaves_no_link_and_no_temporary(driver: FilesystemDriver) -> None:
    # The link's content is staged before the move finds its source gone.
    with pytest.raises(PathNotFound):
        await driver.run_steps([Move("/up/1/data", "/blobs/b/data"), Put("/links/b/link", b"b")])
    assert (driver.root / STAGING).is_dir()
    assert _staged(driver) == []
    assert not (driver.root / "links").exists()


async def test_a_failing_name_discards_the_temporaries_of_the_steps_after_it(
    driver: FilesystemDriver,
) -> None:
    await driver.put_content("/plain", b"a file where a directory is wanted")
    with pytest.raises(OSError):
        await driver.run_steps(
            [Put("/first/link", b"1"), Put("/plain/second/link", b"2"), Put("/third/link", b"3")]
        )
    assert _staged(driver) == []
    assert await driver.get_content("/first/link") == b"1"  # done before the failure
    assert not (driver.root / "third").exists()  # never made: its turn did not come


async def test_a_staging_directory_it_cannot_use_leaves_the_write_beside_its_target(
    driver: FilesystemDriver,
) -> None:
    driver.root.mkdir()
    (driver.root / STAGING).write_bytes(b"not a directory")
    await driver.run_steps([Put("/links/a/link", b"a"), Put("/links/b/link", b"b")])
    assert await driver.get_content("/links/a/link") == b"a"
    assert await driver.get_content("/links/b/link") == b"b"


async def test_a_filesystem_mounted_in_the_store_later_is_written_beside_its_target(
    driver: FilesystemDriver,
) -> None:
    """Mounted after the driver judged the store all one journal: the staged temporary
    cannot be renamed there (EXDEV), so the content is written beside its target."""
    await driver.run_steps([Put("/near/link", b"n")])  # the driver looks now
    with mounted_tmpfs(driver.root / "elsewhere", "size=1m"):
        await driver.run_steps([Put("/near/link", b"m"), Put("/elsewhere/tags/a/link", b"e")])
        assert await driver.get_content("/elsewhere/tags/a/link") == b"e"
        assert await driver.get_content("/near/link") == b"m"
        assert _staged(driver) == []


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path ``fsync``'d from now on (directories: a file's data goes through
    ``fdatasync``), in order."""
    paths: list[Path] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return paths


async def test_a_write_flushes_only_the_directory_of_its_last_name(
    driver: FilesystemDriver, flushed: list[Path]
) -> None:
    """On a journal the last name's directory stands for every directory the write
    changed before it: the names and ``mkdir``s are committed with it, in order."""
    await driver.put_content("/a/b/c/link", b"1")
    assert flushed == [driver.root / "a/b/c"]
    flushed.clear()
    await driver.run_steps([Put("/x/link", b"2"), Put("/y/z/link", b"3")])
    assert flushed == [driver.root / "y/z"]


async def test_a_list_whose_last_directory_is_gone_flushes_the_others(
    driver: FilesystemDriver, flushed: list[Path]
) -> None:
    """The last name's directory removed before the flush (a concurrent delete, here a
    step): the earlier names still get their directories flushed."""
    await driver.run_steps([Put("/a/link", b"a"), Put("/b/link", b"b"), Delete("/b")])
    assert driver.root / "a" in flushed
    assert driver.root / "b" not in flushed


async def test_a_single_write_on_a_filesystem_mounted_later_flushes_every_directory(
    driver: FilesystemDriver, flushed: list[Path]
) -> None:
    """Mounted after the driver judged the store all one journal: the name's directory
    is not on the journal, so it does not stand for its parents there."""
    await driver.put_content("/near/link", b"n")  # the driver looks now
    with mounted_tmpfs(driver.root / "elsewhere", "size=1m"):
        flushed.clear()
        await driver.put_content("/elsewhere/repo/tags/a/link", b"e")
        elsewhere = driver.root / "elsewhere"
        assert flushed == [
            elsewhere / "repo/tags/a",
            elsewhere / "repo/tags",
            elsewhere / "repo",
            elsewhere,
        ]


async def test_a_list_ending_on_a_filesystem_mounted_later_flushes_every_name_in_order(
    driver: FilesystemDriver, flushed: list[Path]
) -> None:
    """The list's last name is on a filesystem mounted in the store after the driver
    looked: its flush stands for nothing on the journal, so every directory is flushed,
    the earlier name's first (the order a power loss without a journal keeps)."""
    await driver.put_content("/near/link", b"n")  # the driver looks now
    with mounted_tmpfs(driver.root / "elsewhere", "size=1m"):
        writer = await driver.writer("/elsewhere/up/1/data")
        await writer.write(b"blob")
        await writer.close()
        flushed.clear()
        await driver.run_steps(
            [Put("/near/x/link", b"x"), Move("/elsewhere/up/1/data", "/elsewhere/blobs/b/data")]
        )
        earlier, last = driver.root / "near/x", driver.root / "elsewhere/blobs/b"
        assert earlier in flushed and last in flushed
        assert flushed.index(earlier) < flushed.index(last)
