"""An upload's requests read its data's size, not its start time: the start time is the
purge's alone, and reading it cost every PATCH and PUT an open, a read and a close on
the event loop (issue 17). Its writer takes the size from the ``fstat`` it makes anyway."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from registry.storage import paths
from registry.storage.driver.filesystem_writer import INLINE_WRITE_BYTES
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.scaleout.test_upload_state import NAME, patch, start


def _start_file(registry_environ: dict[str, str], location: str) -> Path:
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    upload_id = URL(location).path.rsplit("/", 1)[1]
    return root / paths.upload_started_at(NAME, upload_id).lstrip("/")


async def _finish(registry: RegistryClient, location: str, data: bytes) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    separator = "&" if "?" in location else "?"
    response = await registry.put(f"{location}{separator}digest={digest}")
    assert response.status == 201, await response.text()
    pulled = await registry.get(f"/v2/{NAME}/blobs/{digest}")
    assert pulled.status == 200
    assert await pulled.read() == data


async def test_a_chunked_push_opens_its_start_file_only_to_write_it(
    make_registry: ClientFactory,
    registry_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No purge: its pass at start-up reads the start time of every upload it lists.
    registry = await make_registry({"REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED": "false"})
    opened: list[str] = []
    real_open = os.open

    def recording(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return int(real_open(path, *args, **kwargs))

    monkeypatch.setattr(os, "open", recording)
    data = os.urandom(4096)
    location = await start(registry)
    location = await patch(registry, location, data[:1000], 0)
    location = await patch(registry, location, data[1000:], 1000)
    await _finish(registry, location, data)
    start_file = os.fspath(_start_file(registry_environ, location))
    assert opened.count(start_file) == 1  # the POST's write (each PATCH and PUT read it again)


async def test_an_upload_whose_start_time_was_lost_is_continued_and_finished(
    registry: RegistryClient, registry_environ: dict[str, str]
) -> None:
    """The start time is not flushed: a power loss may lose it and keep the data. The
    upload goes on (it was refused as unknown before); the digest is checked over its
    data as ever."""
    data = os.urandom(3000)
    location = await patch(registry, await start(registry), data[:1000], 0)
    _start_file(registry_environ, location).unlink()
    status = await registry.get(location)
    assert status.status == 204
    assert status.headers["Range"] == "0-999"
    location = await patch(registry, location, data[1000:], 1000)
    await _finish(registry, location, data)


async def test_an_upload_s_writers_take_their_file_s_end_from_one_fstat(
    registry: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each open of an upload's data (its POST, each PATCH) made an ``lseek`` to the end
    and an ``fstat``, two syscalls on the event loop where one tells both."""
    seeks: list[int] = []
    real_lseek = os.lseek

    def recording(fd: int, position: int, how: int) -> int:
        seeks.append(fd)
        return real_lseek(fd, position, how)

    monkeypatch.setattr(os, "lseek", recording)
    data = os.urandom(3000)
    location = await patch(registry, await start(registry), data[:1000], 0)
    location = await patch(registry, location, data[1000:], 1000)
    await _finish(registry, location, data)
    assert seeks == []


async def test_a_patch_takes_its_data_s_status_from_its_writer_s_open(
    make_registry: ClientFactory,
    registry_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PATCH read its data's size with a ``stat`` on the event loop and then opened
    it, whose ``fstat`` tells the same (issue 17); and a POST made the empty data file
    through a writer (an open, two ``fstat``s and a close). A PATCH of an upload that
    is not there is still unknown, and creates nothing."""
    registry = await make_registry({"REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED": "false"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    stated: list[str] = []
    fstats: list[int] = []
    real_stat, real_fstat = os.stat, os.fstat

    def recording_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        # On the event loop: a writer's thread checks before each batch that the path
        # still names its file (filesystem_writer.still_named), which is another matter.
        if threading.current_thread() is threading.main_thread():
            stated.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def recording_fstat(fd: int) -> os.stat_result:
        if threading.current_thread() is threading.main_thread():
            fstats.append(fd)
        return real_fstat(fd)

    monkeypatch.setattr(os, "stat", recording_stat)
    monkeypatch.setattr(os, "fstat", recording_fstat)
    # Chunks written from a thread: a small one is written on the loop, with the check
    # that the path still names the file.
    half = INLINE_WRITE_BYTES + 1
    data = os.urandom(2 * half)
    location = await start(registry)
    assert fstats == []  # the POST: its data file made in place
    upload_id = URL(location).path.rsplit("/", 1)[1]
    data_file = os.fspath(root / paths.upload_data(NAME, upload_id).lstrip("/"))
    location = await patch(registry, location, data[:half], 0)
    location = await patch(registry, location, data[half:], half)
    assert data_file not in stated
    await _finish(registry, location, data)

    missing = URL(location).path.replace(upload_id, str(uuid.uuid4()))
    response = await registry.patch(missing, data=b"x", headers={"Content-Range": "0-0"})
    assert response.status == 404
    assert (await response.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert not (root / paths.upload_dir(NAME, missing.rsplit("/", 1)[1]).lstrip("/")).exists()
