"""The storage-driver conformance suite: every backend runs these same tests unchanged.

A new driver joins by adding one entry to ``DRIVER_FACTORIES``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from registry.storage.driver.base import Content, ContentChanged, PathNotFound, StorageDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.driver.s3 import S3Driver
from registry.storage.driver.steps import Delete, Move, Put
from tests.support.backing_services import s3_kinds, shared_services

DriverFactory = Callable[[Path], Awaitable[StorageDriver]]


async def _filesystem(tmp_path: Path) -> StorageDriver:
    return FilesystemDriver(tmp_path / "root", max_threads=4)


async def _inmemory(tmp_path: Path) -> StorageDriver:
    return InMemoryDriver()


def _s3_on(kind: str) -> DriverFactory:
    """The S3 driver over the session's S3 server of that kind, one bucket per test."""

    async def factory(tmp_path: Path) -> StorageDriver:
        server = shared_services().s3_server(kind)
        return S3Driver(server.driver_config(server.create_bucket()))

    return factory


DRIVER_FACTORIES: dict[str, DriverFactory] = {
    "filesystem": _filesystem,
    "inmemory": _inmemory,
    **{f"s3-{kind}": _s3_on(kind) for kind in s3_kinds()},
}


@pytest.fixture(params=sorted(DRIVER_FACTORIES))
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    instance = await DRIVER_FACTORIES[request.param](tmp_path)
    yield instance
    await instance.close()


async def read_all(driver: StorageDriver, path: str, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in driver.reader(path, offset)])


async def test_put_then_get_returns_the_content(driver: StorageDriver) -> None:
    await driver.put_content("/a/b/file", b"hello")
    assert await driver.get_content("/a/b/file") == b"hello"


async def test_put_replaces_existing_content(driver: StorageDriver) -> None:
    await driver.put_content("/file", b"a much longer first version")
    await driver.put_content("/file", b"short")
    assert await driver.get_content("/file") == b"short"


async def test_missing_paths_raise_path_not_found(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFound):
        await driver.get_content("/nope")
    with pytest.raises(PathNotFound):
        await driver.stat("/nope")
    with pytest.raises(PathNotFound):
        await driver.list_dir("/nope")
    with pytest.raises(PathNotFound):
        await driver.delete("/nope")
    with pytest.raises(PathNotFound):
        await driver.move("/nope", "/elsewhere")
    with pytest.raises(PathNotFound):
        await read_all(driver, "/nope")


async def test_stat_reports_size_and_kind(driver: StorageDriver) -> None:
    await driver.put_content("/dir/file", b"12345")
    info = await driver.stat("/dir/file")
    assert (info.size, info.is_dir) == (5, False)
    assert (await driver.stat("/dir")).is_dir


async def test_list_names_direct_children_only(driver: StorageDriver) -> None:
    for path in ("/top/a", "/top/b/c", "/top/b/d", "/other/x"):
        await driver.put_content(path, b"x")
    assert sorted(await driver.list_dir("/top")) == ["a", "b"]
    assert sorted(await driver.list_dir("/top/b")) == ["c", "d"]


async def test_reader_streams_from_an_offset(driver: StorageDriver) -> None:
    content = bytes(range(256)) * 20_000  # several read chunks
    await driver.put_content("/big", content)
    assert await read_all(driver, "/big") == content
    assert await read_all(driver, "/big", 1_000_003) == content[1_000_003:]
    assert await read_all(driver, "/big", len(content)) == b""


async def test_writer_creates_then_appends(driver: StorageDriver) -> None:
    writer = await driver.writer("/uploads/x/data")
    await writer.write(b"abc")
    await writer.write(b"def")
    assert writer.size == 6
    await writer.close()
    appender = await driver.writer("/uploads/x/data", append=True)
    assert appender.size == 6
    await appender.write(b"ghi")
    await appender.close()
    assert await driver.get_content("/uploads/x/data") == b"abcdefghi"
    truncating = await driver.writer("/uploads/x/data")
    await truncating.close()
    assert await driver.get_content("/uploads/x/data") == b""


async def test_an_appender_of_an_existing_file_finds_a_missing_one_missing(
    driver: StorageDriver,
) -> None:
    """``existing``: an upload's PATCH learns its data's size and version from the open
    alone, and an upload that is gone stays gone (nothing is created)."""
    with pytest.raises(PathNotFound):
        await driver.writer("/uploads/gone/data", append=True, existing=True)
    with pytest.raises(PathNotFound):
        await driver.stat("/uploads/gone/data")
    await driver.put_content("/uploads/here/data", b"abc")
    appender = await driver.writer("/uploads/here/data", append=True, existing=True)
    assert appender.size == 3
    assert appender.base_version == (await driver.stat("/uploads/here/data")).version
    await appender.write(b"def")
    await appender.close()
    assert await driver.get_content("/uploads/here/data") == b"abcdef"


async def test_writers_and_stat_name_the_same_version(driver: StorageDriver) -> None:
    """A version names the exact bytes a writer left (hash states of uploads are tied to
    it): stat reports the writer's, an appender says which it continues, and a file
    replaced by other bytes of the same size has another version."""
    writer = await driver.writer("/uploads/v/data")
    await writer.write(b"abc")
    await writer.close()
    first = (await driver.stat("/uploads/v/data")).version
    assert first is not None and first == writer.version
    appender = await driver.writer("/uploads/v/data", append=True)
    assert appender.base_version == first
    await appender.write(b"def")
    await appender.close()
    assert (await driver.stat("/uploads/v/data")).version == appender.version
    before = (await driver.stat("/uploads/v/data")).version
    await driver.put_content("/uploads/v/data", b"ABCDEF")
    replaced = await driver.stat("/uploads/v/data")
    assert replaced.size == 6 and replaced.version not in (None, before)


async def test_move_replaces_destination_and_removes_source(driver: StorageDriver) -> None:
    await driver.put_content("/src/file", b"new")
    await driver.put_content("/dst/deep/file", b"old")
    await driver.move("/src/file", "/dst/deep/file")
    assert await driver.get_content("/dst/deep/file") == b"new"
    with pytest.raises(PathNotFound):
        await driver.stat("/src/file")


async def test_a_move_of_expected_content_refuses_content_appended_since(
    driver: StorageDriver,
) -> None:
    # The finish of an upload moves only the content its digest was checked over.
    writer = await driver.writer("/upload/data", append=True)
    await writer.write(b"checked")
    await writer.close()
    info = await driver.stat("/upload/data")
    assert info.version is not None
    checked = Content(info.size, info.version)
    writer = await driver.writer("/upload/data", append=True)
    await writer.write(b" and appended")
    await writer.close()
    with pytest.raises(ContentChanged):
        await driver.move("/upload/data", "/blob/data", expected=checked)
    with pytest.raises(PathNotFound):  # nothing reached the destination, not even a copy
        await driver.stat("/blob/data")
    assert await driver.get_content("/upload/data") == b"checked and appended"
    now = await driver.stat("/upload/data")
    assert now.version is not None
    await driver.move("/upload/data", "/blob/data", expected=Content(now.size, now.version))
    assert await driver.get_content("/blob/data") == b"checked and appended"


async def test_steps_run_in_order_and_stop_at_the_first_failure(driver: StorageDriver) -> None:
    """``run_steps``: each step as its own method, in order; a Delete of nothing is none
    of a failure, a failing step raises and leaves the later ones undone."""
    writer = await driver.writer("/up/1/data")
    await writer.write(b"blob")
    await writer.close()
    await driver.put_content("/up/1/startedat", b"1")
    await driver.run_steps(
        [
            Move("/up/1/data", "/blobs/b/data"),
            Put("/links/b/link", b"b"),
            Delete("/up/1"),
            Delete("/never/there"),
        ]
    )
    assert await driver.get_content("/blobs/b/data") == b"blob"
    assert await driver.get_content("/links/b/link") == b"b"
    with pytest.raises(PathNotFound):
        await driver.stat("/up/1/startedat")
    with pytest.raises(PathNotFound):
        await driver.run_steps([Move("/up/2/data", "/blobs/c/data"), Put("/links/c/link", b"c")])
    with pytest.raises(PathNotFound):
        await driver.stat("/links/c/link")


async def test_delete_removes_a_whole_tree(driver: StorageDriver) -> None:
    for path in ("/tree/a", "/tree/b/c", "/treetop"):
        await driver.put_content(path, b"x")
    await driver.delete("/tree")
    with pytest.raises(PathNotFound):
        await driver.stat("/tree/b/c")
    assert await driver.get_content("/treetop") == b"x"


async def test_delete_many_reports_the_bytes_each_path_held(driver: StorageDriver) -> None:
    # Garbage collection reports what it freed from these figures, without a stat per blob.
    await driver.put_content("/many/file", b"12345")
    await driver.put_content("/many/tree/a", b"abc")
    await driver.put_content("/many/tree/sub/b", b"de")
    await driver.put_content("/many/kept", b"x")
    removed = await driver.delete_many(["/many/file", "/many/tree", "/many/nope"])
    assert removed == [5, 5, None]
    assert await driver.list_dir("/many") == ["kept"]


async def test_delete_many_with_a_sole_file_still_deletes_whatever_is_there(
    driver: StorageDriver,
) -> None:
    # The hint lets a backend skip a listing; a path holding more, or something else,
    # is deleted whole all the same.
    await driver.put_content("/sole/plain/data", b"12345")
    await driver.put_content("/sole/more/data", b"abc")
    await driver.put_content("/sole/more/lastref", b"de")
    await driver.put_content("/sole/other/file", b"xy")
    await driver.put_content("/sole/file", b"z")
    await driver.put_content("/sole/kept/data", b"k")
    paths = ["/sole/plain", "/sole/more", "/sole/other", "/sole/file", "/sole/nope"]
    removed = await driver.delete_many(paths, sole_file="data")
    assert removed == [5, 5, 2, 1, None]
    assert await driver.list_dir("/sole") == ["kept"]


async def test_modified_many_gives_each_path_its_stat_time_or_none(
    driver: StorageDriver,
) -> None:
    await driver.put_content("/times/a", b"1")
    await driver.put_content("/times/b/data", b"2")
    paths = ["/times/b/data", "/times/missing", "/times/a", "/times/a/below", "/nowhere/x"]
    times = await driver.modified_many(paths)
    assert times == [
        (await driver.stat("/times/b/data")).modified,
        None,
        (await driver.stat("/times/a")).modified,
        None,
        None,
    ]
    assert await driver.modified_many([]) == []
    many = [f"/times/many/{i}" for i in range(300)]  # more than one batch of the driver's
    await asyncio.gather(*(driver.put_content(p, b"x") for p in many[::2]))
    found = await driver.modified_many(many)
    assert [t is not None for t in found] == [i % 2 == 0 for i in range(300)]


async def test_concurrent_puts_leave_one_whole_version(driver: StorageDriver) -> None:
    versions = [bytes([i]) * 200_000 for i in range(8)]
    await asyncio.gather(*(driver.put_content("/contended", v) for v in versions))
    assert await driver.get_content("/contended") in versions


async def test_relative_components_are_refused(driver: StorageDriver) -> None:
    if isinstance(driver, InMemoryDriver):
        pytest.skip("the in-memory driver has no filesystem to escape")
    with pytest.raises(ValueError, match="relative path"):
        await driver.put_content("/a/../../escape", b"x")


async def test_removing_leftovers_keeps_every_written_file(driver: StorageDriver) -> None:
    for path in ("/a/link", "/a/.hidden", "/b/c/data"):
        await driver.put_content(path, b"kept")
    assert await driver.remove_leftovers() == 0
    for path in ("/a/link", "/a/.hidden", "/b/c/data"):
        assert await driver.get_content(path) == b"kept"
    assert sorted(await driver.list_dir("/a")) == [".hidden", "link"]


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 64 * 1024, 64 * 1024 + 1, 1024 * 1024])
async def test_get_content_returns_whole_files_of_any_size(
    driver: StorageDriver, size: int
) -> None:
    # Either side of the filesystem driver's first read (4 KiB) and inline limit (64 KiB).
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await driver.put_content("/sized", content)
    assert await driver.get_content("/sized") == content


async def test_filesystem_reads_leave_no_descriptor_open(tmp_path: Path) -> None:
    """Small files are read inline with bare descriptors: none stays open, whatever the
    read meets (a file, a directory, a missing path, a file past the inline limit)."""
    driver = FilesystemDriver(tmp_path / "root", max_threads=2)
    try:
        await driver.put_content("/dir/small", b"link")
        await driver.put_content("/large", b"l" * (64 * 1024 + 1))
        open_before = len(list(Path("/proc/self/fd").iterdir()))
        for _ in range(50):
            assert await driver.get_content("/dir/small") == b"link"
            assert len(await driver.get_content("/large")) == 64 * 1024 + 1
            for missing in ("/dir", "/nope", "/dir/small/below"):
                with pytest.raises(PathNotFound):
                    await driver.get_content(missing)
        assert len(list(Path("/proc/self/fd").iterdir())) == open_before
    finally:
        await driver.close()


async def test_filesystem_reads_a_link_without_sizing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link (the tag link every manifest GET by tag reads) is read by one ``read``
    that comes back short at its end: no ``fstat`` first. Larger files still are."""
    driver = FilesystemDriver(tmp_path / "root", max_threads=2)
    sized: list[int] = []
    real_fstat = os.fstat

    def counting_fstat(fd: int) -> os.stat_result:
        sized.append(fd)
        return real_fstat(fd)

    try:
        link = b"sha256:" + b"a" * 64
        await driver.put_content("/link", link)
        await driver.put_content("/manifest", b"m" * 5000)
        monkeypatch.setattr(os, "fstat", counting_fstat)
        assert await driver.get_content("/link") == link
        assert sized == []
        assert await driver.get_content("/manifest") == b"m" * 5000
        assert len(sized) == 1
    finally:
        monkeypatch.undo()
        await driver.close()


async def test_written_pieces_follow_each_other_in_order(driver: StorageDriver) -> None:
    """``write_pieces`` as the upload path batches a body: many chunks, a short one and
    an empty one among them, then a plain ``write`` behind them: all in order."""
    pieces = [bytes([n]) * (1000 + n * 4099) for n in range(40)]
    pieces[7] = b"short"
    pieces[8] = b""
    writer = await driver.writer("/uploads/data")
    await writer.write_pieces(pieces)
    await writer.write(b"tail")
    await writer.write_pieces([b"x" * 10, b"y"])
    expected = b"".join(pieces) + b"tail" + b"x" * 10 + b"y"
    assert writer.size == len(expected)
    await writer.close()
    assert await read_all(driver, "/uploads/data") == expected


def _age(directory: Path, seconds: float) -> None:
    """Move ``directory``'s modification time ``seconds`` back: old enough to vouch for."""
    mtime = directory.stat().st_mtime_ns - int(seconds * 1e9)
    os.utime(directory, ns=(mtime, mtime))


async def test_a_listing_stamp_changes_with_the_entries_or_there_is_none(
    driver: StorageDriver,
) -> None:
    """A stamp (where a backend has them) must differ once an entry was added or removed,
    and a recent change is not vouched for (None): see FilesystemDriver.listing_stamp."""
    await driver.put_content("/d/a/file", b"x")
    local = driver.local_path("/d")
    if local is None:  # no directories to stamp (S3, in memory): listed every time
        assert await driver.listing_stamp("/d") is None
        return
    # Not yet 2 s old (here in the future, so that no stall of the machine ages it).
    _age(local, -600)
    assert await driver.listing_stamp("/d") is None
    _age(local, 600 + 3600)
    first = await driver.listing_stamp("/d")
    assert first is not None and await driver.listing_stamp("/d") == first
    await asyncio.sleep(0.05)  # past the clock tick of the last change
    await driver.put_content("/d/b/file", b"y")
    _age(local, 3600)  # the same shift as before: only the change itself tells them apart
    added = await driver.listing_stamp("/d")
    assert added not in (None, first)
    await asyncio.sleep(0.05)
    await driver.delete("/d/a")
    _age(local, 3600)
    assert await driver.listing_stamp("/d") not in (None, first, added)
    with pytest.raises(PathNotFound):
        await driver.listing_stamp("/nothing")
    with pytest.raises(PathNotFound):
        await driver.listing_stamp("/d/b/file")


async def test_put_new_writes_a_file_in_a_new_directory(driver: StorageDriver) -> None:
    await driver.put_new("/uploads/new/startedat", b"1796011456.78")
    assert await driver.get_content("/uploads/new/startedat") == b"1796011456.78"
    assert (await driver.stat("/uploads/new/startedat")).size == 13
