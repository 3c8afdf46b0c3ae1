"""What a tag write that fails takes back (``Tags.tagging``): only what it wrote itself.

A tag write given up before its steps ran (a push that ran out of online collection's
bound while it waited for the tag's lock) undoes nothing: the tag as it is may be another
process's, acknowledged meanwhile (``--workers``, other instances: the lock is this
process's only). One that failed after its current link was placed (its directories'
flush failing) puts the previous link back: the failed push then removes its revision,
and the tag must not be left naming it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.oci.digest import digest_of
from registry.storage import paths
from registry.storage.driver.base import PathNotFound
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.tags import Tags

OLD, NEW, OTHER = digest_of(b"old"), digest_of(b"new"), digest_of(b"other")


class GivenUp(Exception):
    pass


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[FilesystemDriver]:
    instance = FilesystemDriver(tmp_path)
    yield instance
    await instance.close()


async def test_a_write_given_up_before_its_steps_ran_undoes_nothing(
    driver: FilesystemDriver,
) -> None:
    ours, other_process = Tags("app", driver), Tags("app", driver)  # locks of their own
    with pytest.raises(GivenUp):
        async with ours.tagging("t", NEW):
            await other_process.tag("t", OTHER)  # acknowledged by another process
            raise GivenUp  # before ours.start(): nothing of ours was written
    assert await ours.resolve("t") == OTHER


async def test_a_failed_retag_puts_the_previous_link_back(driver: FilesystemDriver) -> None:
    tags = Tags("app", driver)
    await tags.tag("t", OLD)
    with pytest.raises(GivenUp):
        async with tags.tagging("t", NEW) as write:
            await driver.run_steps(write.start())
            raise GivenUp  # as a failing flush after the names were placed
    assert await tags.resolve("t") == OLD
    with pytest.raises(PathNotFound):
        await driver.stat(paths.tag_index_link("app", "t", NEW))


async def test_a_failed_new_tag_leaves_no_directory(driver: FilesystemDriver) -> None:
    tags = Tags("app", driver)
    with pytest.raises(GivenUp):
        async with tags.tagging("t", NEW) as write:
            await driver.run_steps(write.start())
            raise GivenUp
    with pytest.raises(PathNotFound):
        await driver.stat(paths.tag_dir("app", "t"))
