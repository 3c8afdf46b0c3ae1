"""What a push's checks against online garbage collection and its body's batches cost
on the event loop, kept from coming back. Counted, not timed: the machine is shared."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import pytest

from registry.oci.digest import parse_digest
from registry.storage import paths
from registry.storage.driver.base import PathNotFound
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.filesystem_writer import INLINE_WRITE_BYTES
from registry.storage.errors import ManifestBlobUnknown
from registry.storage.gc_safety import BlobGuard
from registry.storage.registry import Registry
from registry.storage.upload_pipe import PIECE_SIZE
from tests.support.oci import OCI_MANIFEST, make_image, sha256_digest
from tests.support.thread_jobs import thread_jobs

DIGEST = parse_digest("sha256:" + "cd" * 32)


async def test_securing_one_blob_starts_no_task_per_worker(tmp_path: Path) -> None:
    """A push's commit secures the one digest of its blob: the refresh and the storage
    check used to start 16 worker tasks each for it, about 6% of a push's time on the
    loop. One digest now takes no task at all."""
    driver = FilesystemDriver(tmp_path, fsync=False)
    guard = BlobGuard(driver, grace=3600.0)  # online: the protocol's reads and writes run
    loop = asyncio.get_running_loop()
    started = 0
    default = loop.get_task_factory()

    def counting(
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        nonlocal started
        started += 1
        if default is not None:
            return default(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        secured = await guard.secure([DIGEST])
    finally:
        loop.set_task_factory(default)
        await driver.close()
    assert secured.missing == {DIGEST}  # nothing stored: found missing, as a new blob is
    assert started == 0


async def test_each_batch_of_a_body_is_written_and_hashed_in_one_thread_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of received chunks was written in one thread job and hashed in another:
    each hand-over costs the event loop a wake-up and, under a push load, dozens of GIL
    exchanges (issue 17). The thread that writes a batch now hashes it too."""
    registry = Registry(FilesystemDriver(tmp_path, max_threads=4, fsync=False))
    chunk, batches = 64 * 1024, 4
    chunks = [os.urandom(chunk) for _ in range(batches * PIECE_SIZE // chunk)]

    async def body() -> AsyncIterator[bytes]:
        for piece in chunks:
            yield piece

    try:
        uploads = registry.repository("app").uploads
        upload_id = (await uploads.start()).upload_id
        with thread_jobs(monkeypatch) as jobs:
            # A PATCH of more than STATELESS_SIZE: its hash state is stored (inline).
            status = await uploads.append(upload_id, body())
        data = b"".join(chunks)
        digest = parse_digest(f"sha256:{hashlib.sha256(data).hexdigest()}")
        assert (await uploads.finish(upload_id, digest)).size == status.size == len(data)
    finally:
        await registry.close()
    assert len(jobs) == batches, f"{jobs} thread jobs for {batches} batches"


async def test_a_small_body_is_written_and_hashed_without_a_thread_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image's config (a few hundred bytes) was written in a thread job of its own:
    one of 11 per pushed image, each costing more than the write (issue 17). A batch of
    at most INLINE_WRITE_BYTES is written and hashed on the loop; a larger one still
    goes to a thread."""
    registry = Registry(FilesystemDriver(tmp_path, max_threads=4))
    small, large = os.urandom(350), os.urandom(INLINE_WRITE_BYTES + 1)

    def body(data: bytes) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            yield data

        return chunks()

    try:
        uploads = registry.repository("app").uploads
        small_id = (await uploads.start()).upload_id
        large_id = (await uploads.start()).upload_id
        with thread_jobs(monkeypatch) as small_jobs:
            await uploads.append(small_id, body(small))
        with thread_jobs(monkeypatch) as large_jobs:
            await uploads.append(large_id, body(large))
        for upload_id, data in ((small_id, small), (large_id, large)):
            digest = parse_digest(f"sha256:{hashlib.sha256(data).hexdigest()}")
            assert (await uploads.finish(upload_id, digest)).size == len(data)
            assert await registry.blob_store.get(digest) == data
    finally:
        await registry.close()
    assert small_jobs == []
    assert len(large_jobs) == 1, large_jobs


async def test_a_small_batch_waits_for_a_held_lock_in_a_thread_not_on_the_loop(
    tmp_path: Path,
) -> None:
    """A finish's move holds the data's lock while it flushes: a small batch that finds
    it held is written from a thread once it is free, and the loop serves meanwhile."""
    registry = Registry(FilesystemDriver(tmp_path, max_threads=4))
    data = b"config"

    async def body() -> AsyncIterator[bytes]:
        yield data

    try:
        uploads = registry.repository("app").uploads
        upload_id = (await uploads.start()).upload_id
        local = registry.driver.local_path(paths.upload_data("app", upload_id))
        assert local is not None
        fd = os.open(local, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # as ``holding`` does
        released = threading.Event()

        def release() -> None:  # from a thread: a loop blocked by the write cannot
            fcntl.flock(fd, fcntl.LOCK_UN)
            released.set()

        timer = threading.Timer(1.0, release)
        timer.start()
        try:
            ticks = 0
            writing = asyncio.ensure_future(uploads.append(upload_id, body()))
            while not released.is_set():
                await asyncio.sleep(0.01)
                ticks += 1
            assert (await writing).size == len(data)
        finally:
            timer.join()
            os.close(fd)
        assert ticks > 20, "the event loop waited for the lock"
        assert await registry.driver.get_content(paths.upload_data("app", upload_id)) == data
    finally:
        await registry.close()


async def test_a_blob_is_committed_in_one_thread_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob's commit was three thread jobs: the move into the blob store (with its
    flushes), the repository's link (with its own), the removal of the upload's
    directory; each a wake-up of a worker and dozens of exchanges of the GIL under a push
    load (issue 17). They now run in one, in that order, each flushed as before."""
    registry = Registry(FilesystemDriver(tmp_path, max_threads=4))
    data = os.urandom(4096)
    digest = parse_digest(f"sha256:{hashlib.sha256(data).hexdigest()}")

    async def body() -> AsyncIterator[bytes]:
        yield data

    try:
        repository = registry.repository("app")
        upload_id = (await repository.uploads.start()).upload_id
        await repository.uploads.append(upload_id, body())
        with thread_jobs(monkeypatch) as jobs:
            assert (await repository.uploads.finish(upload_id, digest)).size == len(data)
        assert await repository.blobs.is_linked(digest)
        with pytest.raises(PathNotFound):  # the upload's directory is gone
            await registry.driver.stat(paths.upload_dir("app", upload_id))
    finally:
        await registry.close()
    assert len(jobs) == 1, jobs


async def _push_blobs(registry: Registry, name: str, blobs: dict[str, bytes]) -> None:
    uploads = registry.repository(name).uploads
    for digest, data in blobs.items():

        async def body(data: bytes = data) -> AsyncIterator[bytes]:
            yield data

        upload_id = (await uploads.start()).upload_id
        await uploads.append(upload_id, body())
        await uploads.finish(upload_id, parse_digest(digest))


def _counting_utimes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    touched: list[str] = []
    utime = os.utime

    def counting(path: Any, *args: Any, **kwargs: Any) -> None:
        touched.append(os.fspath(path))
        utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", counting)
    return touched


async def test_a_manifest_put_does_not_refresh_what_this_process_just_made_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online collection's check at a manifest PUT refreshed each blob it names and its
    own content: a utime on the event loop each, five per image, all of blobs this
    process had just moved in or written itself (issue 17). Those refreshes now count
    (docs/online-gc.md): a push right after its uploads refreshes nothing again, and is
    still refused when a blob is gone."""
    registry = Registry(FilesystemDriver(tmp_path, fsync=False), gc_grace=3600.0)
    image = make_image(layer_size=1024)
    try:
        await _push_blobs(registry, "app", image.blobs)
        manifests = registry.repository("app").manifests
        touched = _counting_utimes(monkeypatch)
        await manifests.put("v1", image.manifest, OCI_MANIFEST)
        assert touched == []
        # A blob deleted since (as a collector would) is found missing all the same.
        monkeypatch.undo()
        layer = parse_digest(sha256_digest(image.layers[0]))
        await registry.driver.delete(paths.blob_dir(layer))
        with pytest.raises(ManifestBlobUnknown):
            await manifests.put("v2", image.manifest, OCI_MANIFEST)
    finally:
        await registry.close()


async def test_a_refresh_older_than_an_eighth_of_the_grace_period_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a refresh within grace/8 counts: later, the PUT refreshes every blob again
    (its bound, grace/2 from the earliest refresh counted, keeps 3/8 of the grace)."""
    grace = 2.0
    registry = Registry(FilesystemDriver(tmp_path, fsync=False), gc_grace=grace)
    image = make_image(layer_size=1024)
    try:
        await _push_blobs(registry, "app", image.blobs)
        await asyncio.sleep(grace / 8 + 0.05)
        touched = _counting_utimes(monkeypatch)
        await registry.repository("app").manifests.put("v1", image.manifest, OCI_MANIFEST)
        # Each blob it names, once; not its own content, written just before.
        assert len(touched) == len(image.blobs)
    finally:
        await registry.close()


async def test_an_upload_s_writes_make_no_directory_once_it_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each open of an upload's data made its directory first (a mkdir failing with
    EEXIST and a stat, on the event loop), though the start had made it: now only an
    open that finds it missing makes it."""
    registry = Registry(FilesystemDriver(tmp_path, fsync=False))
    made: list[str] = []
    mkdir = os.mkdir

    def counting(path: Any, *args: Any, **kwargs: Any) -> None:
        made.append(os.fspath(path))
        mkdir(path, *args, **kwargs)

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    try:
        uploads = registry.repository("app").uploads
        upload_id = (await uploads.start()).upload_id
        monkeypatch.setattr(os, "mkdir", counting)
        # Lengths declared and small: no hash state is stored (its own directory).
        assert (await uploads.append(upload_id, body(), start=0, length=3)).size == 3
        assert (await uploads.append(upload_id, body(), start=3, length=3)).size == 6
    finally:
        await registry.close()
    assert made == []


async def test_a_new_blob_is_refreshed_in_its_commit_s_thread_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new blob's lastref is refreshed before it becomes visible: a utime of the
    upload's data, made on the event loop before the commit's thread job (issue 17).
    It is now that job's first step, before the move: still fresh when it appears."""
    registry = Registry(FilesystemDriver(tmp_path, fsync=False), gc_grace=3600.0)
    data = os.urandom(1024)
    digest = parse_digest(f"sha256:{hashlib.sha256(data).hexdigest()}")
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    utime = os.utime

    def watching(path: Any, *args: Any, **kwargs: Any) -> None:
        if threading.get_ident() == loop_thread:
            on_loop.append(os.fspath(path))
        utime(path, *args, **kwargs)

    async def body() -> AsyncIterator[bytes]:
        yield data

    try:
        uploads = registry.repository("app").uploads
        upload_id = (await uploads.start()).upload_id
        await uploads.append(upload_id, body())
        upload_data = registry.driver.local_path(paths.upload_data("app", upload_id))
        assert upload_data is not None
        os.utime(upload_data, (1.0, 1.0))  # as old as a file can be
        monkeypatch.setattr(os, "utime", watching)
        before = time.time()
        await uploads.finish(upload_id, digest)
        blob = registry.driver.local_path(paths.blob_data(digest))
        assert blob is not None
        assert blob.stat().st_mtime >= before - 1  # fresh as it became visible
    finally:
        await registry.close()
    # Only the check that finds the blob missing (its own utime) runs on the loop.
    assert on_loop == [os.fspath(blob)]


async def test_an_upload_s_start_time_is_written_without_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload's start time was written as every file is replaced: a locked
    temporary, then a rename (six syscalls on the event loop, issue 17). No one can
    read it before its upload's id is answered: it is now written in place."""
    registry = Registry(FilesystemDriver(tmp_path, fsync=False))
    renamed: list[str] = []
    replace = os.replace

    def counting(source: Any, destination: Any, **kwargs: Any) -> None:
        renamed.append(os.fspath(destination))
        replace(source, destination, **kwargs)

    monkeypatch.setattr(os, "replace", counting)
    try:
        uploads = registry.repository("app").uploads
        started = await uploads.start()
        status = await uploads.status(started.upload_id)
        assert status.size == 0
        upload_dir = registry.driver.local_path(paths.upload_dir("app", started.upload_id))
        assert upload_dir is not None
        assert sorted(p.name for p in upload_dir.iterdir()) == ["data", "startedat"]
    finally:
        await registry.close()
    assert renamed == []


def _counting_directory_calls(
    monkeypatch: pytest.MonkeyPatch, directories: list[Path]
) -> list[tuple[str, str, str]]:
    """Every ``os.mkdir`` and ``os.stat`` of one of ``directories`` from now on: the
    call, the path's name and the outcome ("done" or the error's name)."""
    watched = {os.fspath(directory) for directory in directories}
    calls: list[tuple[str, str, str]] = []

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(path) not in watched:
                return real(path, *args, **kwargs)
            try:
                result = real(path, *args, **kwargs)
            except OSError as error:
                calls.append((name, Path(path).name, type(error).__name__))
                raise
            calls.append((name, Path(path).name, "done"))
            return result

        return call

    monkeypatch.setattr(os, "mkdir", counting("mkdir", os.mkdir))
    monkeypatch.setattr(os, "stat", counting("stat", os.stat))
    return calls


async def test_a_new_links_directories_cost_one_call_per_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link whose parent is there (a blob's directory, a revision's, a repository's
    next layer link) has its directory made with one mkdir: a stat of each level first
    cost two or three calls more, each in a file thread a hand-over of the interpreter
    lock (issue 17). A tag's first link, four levels below one that is there, costs
    seven (three mkdirs find their parent missing) where a stat of each level and a
    mkdir of each missing one cost nine."""
    driver = FilesystemDriver(tmp_path, max_threads=2)
    first = tmp_path / "repo/tags/v1/index/sha256/abc"
    second = tmp_path / "repo/tags/v1/index/sha256/def"
    try:
        (tmp_path / "repo/tags").mkdir(parents=True)
        levels = [first, *list(first.parents)[:3], second]
        calls = _counting_directory_calls(monkeypatch, levels)
        await driver.put_content("/repo/tags/v1/index/sha256/abc/link", b"sha256:abc")
        assert (first / "link").read_bytes() == b"sha256:abc"
        assert calls == [
            ("mkdir", "abc", "FileNotFoundError"),
            ("mkdir", "sha256", "FileNotFoundError"),
            ("mkdir", "index", "FileNotFoundError"),
            ("mkdir", "v1", "done"),
            ("mkdir", "index", "done"),
            ("mkdir", "sha256", "done"),
            ("mkdir", "abc", "done"),
        ]
        calls.clear()
        await driver.put_content("/repo/tags/v1/index/sha256/def/link", b"sha256:def")
        assert calls == [("mkdir", "def", "done")]
    finally:
        await driver.close()


async def test_a_directory_of_files_is_deleted_without_rmtree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload's directory after its commit (its start time left in it) goes with a
    listing, an unlink and a rmdir: ``shutil.rmtree`` took 15 calls for it, each in a
    file thread a hand-over of the interpreter lock (issue 17). A tree with a
    subdirectory (an upload's hash states) goes to rmtree at once, its files not
    unlinked first; a missing path is still PathNotFound."""
    trees: list[tuple[str, list[str]]] = []
    real = shutil.rmtree

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        trees.append((Path(path).name, sorted(p.name for p in Path(path).iterdir())))
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    driver = FilesystemDriver(tmp_path, max_threads=2)
    try:
        await driver.put_content("/uploads/one/startedat", b"1")
        await driver.put_content("/uploads/two/startedat", b"2")
        await driver.put_content("/uploads/two/hashstates/sha256/0", b"state")
        await driver.delete("/uploads/one")
        await driver.delete("/uploads/two")
        with pytest.raises(PathNotFound):
            await driver.delete("/uploads/three")
    finally:
        await driver.close()
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == []
    assert trees == [("two", ["hashstates", "startedat"])]


def test_a_directory_deleted_meanwhile_counts_as_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gone between its lstat and its listing (a concurrent delete): it was there, so
    the delete succeeded, as ``delete_tree`` has it; never PathNotFound."""
    from registry.storage.driver.filesystem_steps import delete_path

    target = tmp_path / "upload"
    target.mkdir()
    (target / "startedat").write_bytes(b"1")
    real = os.scandir

    def scandir(path: Any) -> Any:
        if isinstance(path, str) and Path(path) == target and target.exists():
            real_rmtree(target)  # the concurrent delete, just before this one lists
        return real(path)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(os, "scandir", scandir)
    delete_path(target, "/upload")
    assert not target.exists()


def test_make_dirs_names_every_directory_whose_entries_changed(tmp_path: Path) -> None:
    """What a durable write flushes once its file is in place: the parent of every level
    made, the deepest first; nothing for a directory already there."""
    from registry.storage.driver.durability import make_dirs

    (tmp_path / "a").mkdir()
    assert make_dirs(tmp_path / "a") == []
    assert make_dirs(tmp_path / "a/b") == [tmp_path / "a"]
    assert make_dirs(tmp_path / "a/b/c/d/e") == [
        tmp_path / "a/b/c/d",
        tmp_path / "a/b/c",
        tmp_path / "a/b",
    ]
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert make_dirs(tmp_path / "link/f/g") == [tmp_path / "link/f", tmp_path / "link"]
    assert (tmp_path / "a/f/g").is_dir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        make_dirs(tmp_path / "file/h")
