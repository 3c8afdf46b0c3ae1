"""Registry processes sharing one filesystem store continue each other's uploads' hashes:
a 1 GiB upload in 64 chunks, each sent to another of three instances, and an upload whose
instance is killed half-way and continued on a fresh one, finish without reading the data
back (counted by the kernel: ``rchar`` of ``/proc/<pid>/io``, every byte the process read).
Without a shared secret the fresh instance cannot trust the states and re-reads, correctly.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.tmpfs import mounted_tmpfs

NAME = "team/big"
MIB = 1024 * 1024
_BLOCK = os.urandom(MIB)
# What the finishing request itself may read: its headers, the state, small metadata.
SMALL_READ = MIB


def stream(at: int, size: int) -> bytes:
    """Bytes ``at..at+size`` of an endless stream of distinct 1 MiB blocks."""
    first, last = at // MIB, (at + size - 1) // MIB
    blocks = b"".join(n.to_bytes(8, "big") + _BLOCK[8:] for n in range(first, last + 1))
    return blocks[at - first * MIB :][:size]


def chunk_sizes(count: int, size: int) -> list[int]:
    """``count`` sizes adding up to ``count * size``, none a whole number of hash blocks."""
    # Pairs of odd deviations in opposite directions, so the total is exact (count even).
    return [size + (1 if i % 2 == 0 else -1) * (1001 + 2 * (i // 2)) for i in range(count)]


def read_chars(process: ServerProcess) -> int:
    assert process.process is not None
    io_lines = Path(f"/proc/{process.process.pid}/io").read_text().splitlines()
    return next(int(line.split()[1]) for line in io_lines if line.startswith("rchar:"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "store", "size=1200m") as mount_point:
        yield mount_point


def instance(tmp_path: Path, store: Path, label: str, secret: str) -> ServerProcess:
    workdir = tmp_path / label
    workdir.mkdir()
    return filesystem_registry(
        workdir,
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(store),
        REGISTRY_HTTP_SECRET=secret,
        REGISTRY_LOG_ACCESSLOG_DISABLED="true",
    )


class Upload:
    """One chunked upload driven by hand: each request goes where the test says."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.location = ""
        self.size = 0
        self.hasher = hashlib.sha256()

    async def start(self, on: ServerProcess) -> None:
        async with self.session.post(f"{on.url}/v2/{NAME}/blobs/uploads/") as response:
            assert response.status == 202, await response.text()
            self.location = URL(response.headers["Location"]).raw_path_qs

    async def send(self, on: ServerProcess, size: int) -> None:
        data = stream(self.size, size)
        self.hasher.update(data)
        headers = {
            "Content-Range": f"{self.size}-{self.size + size - 1}",
            "Content-Type": "application/octet-stream",
        }
        url = f"{on.url}{self.location}"
        async with self.session.patch(url, data=io.BytesIO(data), headers=headers) as response:
            assert response.status == 202, await response.text()
            self.location = URL(response.headers["Location"]).raw_path_qs
        self.size += size

    async def finish(self, on: ServerProcess) -> int:
        """PUT the digest on ``on``; the bytes ``on`` read meanwhile."""
        digest = f"sha256:{self.hasher.hexdigest()}"
        before = read_chars(on)
        url = f"{on.url}{self.location}"
        async with self.session.put(url, params={"digest": digest}) as response:
            assert response.status == 201, await response.text()
        read = read_chars(on) - before
        async with self.session.head(f"{on.url}/v2/{NAME}/blobs/{digest}") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(self.size)
        return read


async def test_a_1gib_upload_in_64_chunks_on_three_instances_is_never_re_read(
    tmp_path: Path, store: Path
) -> None:
    instances = [instance(tmp_path, store, f"i{n}", "shared-secret") for n in range(3)]
    try:
        for server in instances:
            server.start()
        async with aiohttp.ClientSession() as session:
            upload = Upload(session)
            await upload.start(instances[0])
            for index, size in enumerate(chunk_sizes(64, 16 * MIB)):
                await upload.send(instances[(index + 1) % 3], size)
            assert upload.size == 1024 * MIB
            # The last chunk went to instance 1 (64 % 3): another one finishes.
            assert await upload.finish(instances[2]) < SMALL_READ
    finally:
        for server in instances:
            server.stop()


@pytest.mark.parametrize("secret", ["shared-secret", ""])
async def test_an_upload_continues_on_a_fresh_instance_after_a_kill(
    tmp_path: Path, store: Path, secret: str
) -> None:
    first = instance(tmp_path, store, "first", secret)
    fresh = instance(tmp_path, store, "fresh", secret)
    try:
        first.start()
        async with aiohttp.ClientSession() as session:
            upload = Upload(session)
            await upload.start(first)
            sizes = chunk_sizes(8, 4 * MIB)
            for size in sizes[:4]:
                await upload.send(first, size)
            assert first.process is not None
            first.process.kill()  # no clean shutdown: whatever it kept in memory is lost
            first.process.wait(20)
            fresh.start()
            for size in sizes[4:]:
                await upload.send(fresh, size)
            read = await upload.finish(fresh)
            async with session.get(
                f"{fresh.url}/v2/{NAME}/blobs/sha256:{upload.hasher.hexdigest()}"
            ) as response:
                assert await response.read() == stream(0, upload.size)
        if secret:
            assert read < SMALL_READ
        else:  # a state no instance can authenticate is not used: the data is re-read
            assert read >= upload.size
    finally:
        first.stop()
        fresh.stop()
