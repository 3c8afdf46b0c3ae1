"""Temporaries of killed writers (``.link.<uuid>.tmp`` and the like) are removed at
start-up and by the upload purge, while a live writer's temporary is left alone: placed
as a killed writer leaves them, and left by a registry really killed mid-push."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import http.client
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from registry.storage.driver.filesystem import FilesystemDriver
from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.syscalls import SyscallTrace

LAYER = "a" * 64


def _leave_temporary(directory: Path, name: str) -> Path:
    """A temporary as a writer killed before its rename leaves it: written, unlocked."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    path.write_bytes(b"sha256:" + LAYER.encode())
    return path


def _wait_gone(paths: list[Path], registry: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(p.exists() for p in paths):
        if time.monotonic() > deadline:
            left = [str(p) for p in paths if p.exists()]
            raise AssertionError(f"still there after {timeout:.0f}s: {left}\n{registry.log()}")
        time.sleep(0.1)


def _wait_logged(line: str, registry: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in registry.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"not logged after {timeout:.0f}s: {line}\n{registry.log()}")
        time.sleep(0.1)


def _registry(tmp_path: Path, purging: str = "true") -> ServerProcess:
    return filesystem_registry(tmp_path, REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED=purging)


def _push_blob(port: int, data: bytes) -> None:
    """POST and PUT a blob; the connection may die with the server (that is the point)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v2/app/blobs/uploads/")
        response = connection.getresponse()
        response.read()
        location = response.getheader("Location", "")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        separator = "&" if "?" in location else "?"
        connection.request("PUT", f"{location}{separator}digest={digest}", body=data)
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass
    finally:
        connection.close()


def test_sigkill_between_write_and_rename_leaves_nothing_after_restart(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.start()
    assert registry.process is not None
    # Beside its target, or in the staging directory where the store's filesystem
    # commits metadata in order (filesystem_staged): anywhere in the store.
    store = tmp_path / "data"
    # Every rename waits a second, so the push stops with its link temporary written.
    trace = SyscallTrace(
        registry.process.pid,
        tmp_path / "strace.log",
        inject="rename,renameat,renameat2:delay_enter=1s",
    )
    pusher = threading.Thread(target=_push_blob, args=(registry.port, os.urandom(4096)))
    try:
        pusher.start()
        deadline = time.monotonic() + 60
        while not list(store.rglob(".link.*.tmp")):
            assert time.monotonic() < deadline, f"no link temporary appeared\n{registry.log()}"
            time.sleep(0.05)
        registry.process.send_signal(signal.SIGKILL)
        registry.process.wait(20)
        trace.close()
        pusher.join(60)
        [left] = list(store.rglob(".link.*.tmp"))  # what a SIGKILL leaves

        registry.start()
        _wait_gone([left], registry)
    finally:
        registry.stop()
        trace.close()
        pusher.join(60)


@pytest.mark.parametrize("purging", ["true", "false"])
def test_start_up_removes_killed_writers_temporaries(tmp_path: Path, purging: str) -> None:
    v2 = tmp_path / "data/docker/registry/v2"
    repo = v2 / "repositories/app"
    left = [
        _leave_temporary(repo / "_layers/sha256" / LAYER, "link"),
        _leave_temporary(repo / "_manifests/tags/latest/current", "link"),
        _leave_temporary(repo / f"_uploads/{uuid.uuid4()}", "startedat"),
        _leave_temporary(v2 / "blobs/sha256" / LAYER[:2] / LAYER, "data"),
    ]
    kept = [repo / "_layers/sha256" / LAYER / "link", repo / "_layers/sha256" / LAYER / ".x.tmp"]
    for path in kept:
        path.write_bytes(b"sha256:" + LAYER.encode())
    # A live writer's temporary (another worker on the same storage): locked, so kept.
    live = _leave_temporary(repo / "_manifests/tags/other/current", "link")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    registry = _registry(tmp_path, purging)
    try:
        registry.start()
        _wait_gone(left, registry)
        assert all(path.exists() for path in kept)
        assert live.exists()
        # The sweep logs once it has finished: the files can be gone a moment before.
        _wait_logged("removed 4 temporary files left by killed writers", registry)
    finally:
        registry.stop()
        os.close(fd)


async def test_sweeping_never_breaks_a_concurrent_write(tmp_path: Path) -> None:
    """Sweeps racing many writes remove nothing a live writer still needs."""
    driver = FilesystemDriver(tmp_path / "root", max_threads=8)
    stop = asyncio.Event()

    async def sweep() -> None:
        while not stop.is_set():
            await driver.remove_leftovers()
            await asyncio.sleep(0)

    sweeper = asyncio.create_task(sweep())
    try:
        for round_ in range(20):
            await asyncio.gather(
                *(driver.put_content(f"/d{i % 4}/f{i}", f"{round_}".encode()) for i in range(20))
            )
    finally:
        stop.set()
        await sweeper
        await driver.close()
    for i in range(20):
        assert (tmp_path / f"root/d{i % 4}/f{i}").read_bytes() == b"19"
    assert not list((tmp_path / "root").rglob("*.tmp"))
