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
