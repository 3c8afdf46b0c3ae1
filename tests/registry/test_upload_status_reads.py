"""An upload's requests read its data's size, not its start time: the start time is the
purge's alone, and reading it cost every PATCH and PUT an open, a read and a close on
the event loop (issue 17). Its writer takes the size from the ``fstat`` it makes anyway."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from registry.storage import paths
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
