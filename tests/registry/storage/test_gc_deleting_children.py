"""The offline collection's deleting children (``filesystem_deleters``): ``delete_many``
runs in processes of their own, which refuse paths outside the root, die with their
parent, and whose failure sends their runs back to the driver's threads. Real processes,
real signals, real files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.storage.driver import child_program, filesystem_delete
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.filesystem_deleters import DeletionRefused
from tests.registry.storage.test_temporaries_walk_child import _children
from tests.support.process_state import alive


def _blobs(root: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        directory = root / "blobs" / f"{index % 7:02x}" / f"blob{index}"
        directory.mkdir(parents=True)
        (directory / "data").write_bytes(b"x" * index)
        paths.append(f"/blobs/{index % 7:02x}/blob{index}")
    return paths


def _deleters() -> list[int]:
    """This process's deleting children (not the services other tests of the session
    started, which are its children too)."""
    program = os.path.basename(filesystem_delete.__file__).encode()
    found = []
    for pid in _children(os.getpid()):
        with contextlib.suppress(OSError):
            if program in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


async def test_deletions_run_in_the_children_not_in_threads(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    driver.delete_in_children(2)
    try:
        paths = _blobs(tmp_path, 50)
        sizes = await driver.delete_many(paths, sole_file="data")
        assert sizes == list(range(50))
        assert not any((tmp_path / p.lstrip("/")).exists() for p in paths)
        assert len(_deleters()) == 2
        assert not driver._pool._threads  # no thread of the driver deleted anything
    finally:
        await driver.close()
    assert _deleters() == []  # closed: the children have exited


async def test_a_root_of_slash_deletes_in_the_children(tmp_path: Path) -> None:
    # rootdirectory "/" makes every full path begin "//": doubled slashes, not outside.
    paths = [f"{tmp_path}{p}" for p in _blobs(tmp_path, 5)]
    assert await _deleted_by_one_child(Path("/"), paths, "data") == list(range(5))
    assert not any(Path(p).exists() for p in paths)


async def test_a_run_of_one_directory_s_many_files_is_answered_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One directory's paths are one run however many (runs_by_parent), so a reply line
    # outgrows asyncio's default 64 KiB limit: it must still be read, not re-done.
    caplog.set_level(logging.WARNING, logger="registry.storage.deleters")
    directory = tmp_path / "many"
    directory.mkdir()
    count = 8_000
    for index in range(count):  # sparse: 14-digit sizes, about 120 KB of reply, no disk
        path = directory / f"file{index}"
        path.touch()
        os.truncate(path, 10**13 + index)
    paths = [f"/many/file{i}" for i in range(count)]
    sizes = await _deleted_by_one_child(tmp_path, paths, None)
    assert sizes == [10**13 + index for index in range(count)]
    assert list(directory.iterdir()) == []
    assert "a deleting child failed" not in caplog.text


async def _deleted_by_one_child(
    root: Path, paths: list[str], sole_file: str | None
) -> list[int | None]:
    """``delete_many`` of a driver on ``root`` with one deleting child, which must have
    done it all (no thread of the driver started)."""
    driver = FilesystemDriver(root)
    driver.delete_in_children(1)
    try:
        sizes = await driver.delete_many(paths, sole_file=sole_file)
        assert not driver._pool._threads
        return sizes
    finally:
        await driver.close()


async def test_a_dead_child_s_runs_go_to_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="registry.storage.deleters")
    driver = FilesystemDriver(tmp_path)
    driver.delete_in_children(2)
    try:
        await driver.delete_many(_blobs(tmp_path / "first", 4), sole_file="data")
        for pid in _deleters():
            os.kill(pid, signal.SIGKILL)
        paths = [f"/second{p}" for p in _blobs(tmp_path / "second", 40)]
        sizes = await driver.delete_many(paths, sole_file="data")
        assert sizes == list(range(40))
        assert not any((tmp_path / p.lstrip("/")).exists() for p in paths)
        assert "a deleting child failed" in caplog.text
    finally:
        await driver.close()


async def test_a_child_refuses_a_path_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    driver = FilesystemDriver(root)
    driver.delete_in_children(1)
    children = driver._children
    assert children is not None
    try:
        for path in (str(outside), f"{root}/../outside", f"{root}/a/./b", str(root)):
            with pytest.raises(DeletionRefused):
                await children.deleted_all([path], "data")
        assert (outside / "data").read_bytes() == b"keep"
    finally:
        await driver.close()


def test_the_child_program_refuses_before_deleting_anything(tmp_path: Path) -> None:
    store = tmp_path / "store"
    inside = _blobs(store, 2)
    climbing = f"{store}/../store{inside[1]}"  # inside, but by way of ".."
    request = ["data", [f"{store}{inside[0]}", climbing]]
    program = child_program.command(filesystem_delete.__file__, str(store))
    done = subprocess.run(
        [*program, str(os.getpid())],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == {"refused": climbing}
    assert (store / f"{inside[0].lstrip('/')}/data").exists()


def test_the_children_die_with_a_killed_collector(tmp_path: Path) -> None:
    """SIGKILL of the collector takes its deleting children with it (the kernel's
    parent-death signal): none is left, adopted by init, waiting on its input."""
    program = (
        "import asyncio, sys, time\n"
        "from registry.storage.driver.filesystem import FilesystemDriver\n"
        "async def main():\n"
        "    driver = FilesystemDriver(sys.argv[1])\n"
        "    driver.delete_in_children(2)\n"
        "    await driver.delete_many(['/nothing'], sole_file='data')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    collector = subprocess.Popen(
        [sys.executable, "-c", program, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    children: list[int] = []
    try:
        assert collector.stdout is not None
        assert collector.stdout.readline() == b"ready\n"
        children = _children(collector.pid)
        assert len(children) == 2
        collector.kill()
        collector.wait(timeout=10)
        ends = time.monotonic() + 10
        while any(map(alive, children)) and time.monotonic() < ends:
            time.sleep(0.01)
        assert not any(map(alive, children)), "a deleting child outlived its collector"
    finally:
        collector.kill()
        collector.communicate(timeout=10)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_the_children_end_together(tmp_path: Path) -> None:
    """``close`` ends every child at once: with the first child stopped (it cannot exit
    yet), the others have exited before it is let go. One after the other, the
    collection's end waited for each child's exit in turn, the first holding up the rest."""
    driver = FilesystemDriver(tmp_path)
    driver.delete_in_children(3)
    try:
        await driver.delete_many(_blobs(tmp_path, 6), sole_file="data")
        children = driver._children._children if driver._children is not None else None
        assert children is not None and len(children) == 3
        first, *others = [child.process.pid for child in children]
        os.kill(first, signal.SIGSTOP)
        closing = asyncio.ensure_future(driver.close())
        try:
            for _ in range(500):  # 10 s at most
                if not any(alive(pid) for pid in others):
                    break
                await asyncio.sleep(0.02)
            assert not any(alive(pid) for pid in others)  # exited while the first waits
            assert alive(first) and not closing.done()
        finally:
            os.kill(first, signal.SIGCONT)
            await closing
    finally:
        await driver.close()
    assert _deleters() == []
