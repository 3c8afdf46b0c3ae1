"""The filesystem driver's ``run_steps`` with flushing on (``filesystem_staged``): what a
failing step leaves behind, and a target on another filesystem inside the store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.storage.driver.base import PathNotFound
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.filesystem_staged import STAGING
from registry.storage.driver.steps import Delete, Move, Put
from tests.support.tmpfs import mounted_tmpfs


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[FilesystemDriver]:
    instance = FilesystemDriver(tmp_path / "root", max_threads=4)
    yield instance
    await instance.close()


def _staged(driver: FilesystemDriver) -> list[str]:
    staging = driver.root / STAGING
    return sorted(os.listdir(staging)) if staging.exists() else []


async def test_a_missing_source_leaves_no_link_and_no_temporary(driver: FilesystemDriver) -> None:
    # The link's content is staged before the move finds its source gone.
    with pytest.raises(PathNotFound):
        await driver.run_steps([Move("/up/1/data", "/blobs/b/data"), Put("/links/b/link", b"b")])
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


async def test_a_commit_lands_whole(driver: FilesystemDriver) -> None:
    writer = await driver.writer("/up/1/data")
    await writer.write(b"blob")
    await writer.close()
    await driver.run_steps(
        [Move("/up/1/data", "/blobs/b/data"), Put("/links/b/link", b"b"), Delete("/up/1")]
    )
    assert await driver.get_content("/blobs/b/data") == b"blob"
    assert await driver.get_content("/links/b/link") == b"b"
    assert not (driver.root / "up/1").exists()
    assert _staged(driver) == []


async def test_a_target_on_another_filesystem_is_written_beside_it(
    driver: FilesystemDriver, tmp_path: Path
) -> None:
    """A directory of the store mounted from elsewhere: the staged temporary cannot be
    renamed there (EXDEV), so the content is written beside its target instead."""
    await driver.put_content("/elsewhere/.keep", b"")
    with mounted_tmpfs(driver.root / "elsewhere", "size=1m"):
        await driver.run_steps([Put("/near/link", b"n"), Put("/elsewhere/tags/link", b"e")])
        assert await driver.get_content("/elsewhere/tags/link") == b"e"
        assert await driver.get_content("/near/link") == b"n"
        assert _staged(driver) == []
