"""What a 201 acknowledges survives a power loss right after it, on a journalled ext4 (a
real one, loop-mounted from a file), as production volumes are.

The power loss: right after each 201, the file that holds the filesystem is copied while
the registry keeps it mounted. The copy holds what reached the block device by then and
nothing of what only sits in memory (the page cache, the journal's running transaction),
which is what a machine that loses power keeps; mounting the copy replays its journal, as
the next boot would. The filesystem is mounted with ``commit=300`` so that the journal's
own timer (every 5 s by default) cannot commit on the registry's behalf in between: what
the copy holds was made durable by the registry's own flushes.

A push that flushes nothing loses everything in the same test: the method can tell.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from tests.support.ext4 import image_of, mounted_ext4
from tests.support.mounts import mounted
from tests.support.oci import Image, make_image, sha256_digest
from tests.support.portside_servers import filesystem_registry
from tests.support.upstreams import push_blob_data, put_manifest

REPO = "durable/after-power-loss"
TAG = "latest"
SIZE = 64 * 1024 * 1024  # sparse: a copy takes a fraction of a second


async def test_each_acknowledged_push_step_survives_a_power_loss(tmp_path: Path) -> None:
    image = make_image(layer_count=2, layer_size=1024 * 1024, seed="power-loss")
    crashes = await _push_crashing_after_each_201(tmp_path, image, fsync="true")
    try:
        _check_each_step_survived(image, crashes)
    finally:
        for crash in crashes:
            crash.unlink(missing_ok=True)


def _check_each_step_survived(image: Image, crashes: list[Path]) -> None:
    manifest_digest = sha256_digest(image.manifest)
    pushed: dict[str, bytes] = {}
    assert len(crashes) == len(image.blobs) + 1
    for (digest, data), crash in zip(image.blobs.items(), crashes[:-1], strict=True):
        pushed[digest] = data
        # Every blob acknowledged so far, each with its repository's link, after the
        # power loss that followed the blob's 201.
        with _after_power_loss(crash) as v2:
            for earlier, content in pushed.items():
                assert _blob(v2, earlier) == content, earlier
                assert _link(v2, "_layers", earlier) == earlier.encode()
    with _after_power_loss(crashes[-1]) as v2:
        assert _blob(v2, manifest_digest) == image.manifest
        assert _link(v2, "_manifests/revisions", manifest_digest) == manifest_digest.encode()
        tag = v2 / "repositories" / REPO / "_manifests/tags" / TAG
        assert (tag / "current/link").read_bytes() == manifest_digest.encode()
        index = tag / "index" / manifest_digest.replace(":", "/") / "link"
        assert index.read_bytes() == manifest_digest.encode()


async def test_a_push_that_flushes_nothing_is_lost_by_the_same_power_loss(
    tmp_path: Path,
) -> None:
    """The control: with ``storage.filesystem.fsync: false`` the same copy after the
    manifest's 201 holds no tag, so the test above sees what flushing made durable."""
    image = make_image(layer_count=1, layer_size=64 * 1024, seed="power-loss-control")
    crashes = await _push_crashing_after_each_201(tmp_path, image, fsync="false")
    try:
        with _after_power_loss(crashes[-1]) as v2:
            tag = v2 / "repositories" / REPO / "_manifests/tags" / TAG / "current/link"
            assert not tag.exists()
    finally:
        for crash in crashes:
            crash.unlink(missing_ok=True)


async def _push_crashing_after_each_201(tmp_path: Path, image: Image, fsync: str) -> list[Path]:
    """Push ``image`` (each blob, then the manifest by tag) to a registry storing on a
    journalled ext4; after each 201, a copy of the filesystem as a power loss would leave
    it. The copies, in the order of the 201s."""
    disk = tmp_path / "disk"
    disk.mkdir()
    crashes: list[Path] = []
    try:
        return await _push_onto(disk, tmp_path, image, fsync, crashes)
    except BaseException:
        for crash in crashes:
            crash.unlink()
        raise


async def _push_onto(
    disk: Path, tmp_path: Path, image: Image, fsync: str, crashes: list[Path]
) -> list[Path]:
    with mounted_ext4(disk, size=SIZE, options=["commit=300"]) as store:
        registry = filesystem_registry(
            store,
            REGISTRY_STORAGE_FILESYSTEM_FSYNC=fsync,
            REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED="false",
        )
        registry.start()
        try:
            async with aiohttp.ClientSession() as session:
                for digest, data in image.blobs.items():
                    await push_blob_data(session, registry.url, REPO, digest, data)
                    crashes.append(_power_loss_copy(disk, tmp_path / f"crash{len(crashes)}"))
                await put_manifest(session, registry.url, REPO, TAG, image.manifest)
                crashes.append(_power_loss_copy(disk, tmp_path / f"crash{len(crashes)}"))
        finally:
            registry.stop()
    return crashes


def _power_loss_copy(disk: Path, directory: Path) -> Path:
    """The filesystem's file as it is now on the block device (the registry still has it
    mounted)."""
    directory.mkdir()
    copy = image_of(directory)
    subprocess.run(
        ["cp", "--sparse=always", str(image_of(disk)), str(copy)], check=True, timeout=60
    )
    return copy


@contextlib.contextmanager
def _after_power_loss(copy: Path) -> Iterator[Path]:
    """The copy mounted (its journal replayed, as at the next boot); the registry's
    ``v2`` directory in it. Unmounted and removed afterwards."""
    mount_point = copy.parent / "mnt"
    mount_point.mkdir()
    try:
        with mounted(["-o", "loop"], str(copy), mount_point, "the copy of a loop-mounted ext4"):
            yield mount_point / "data/docker/registry/v2"
    finally:
        mount_point.rmdir()
        copy.unlink()  # the others go at the test's end


def _blob(v2: Path, digest: str) -> bytes | None:
    algorithm, hex_digest = digest.split(":", 1)
    data = v2 / "blobs" / algorithm / hex_digest[:2] / hex_digest / "data"
    return data.read_bytes() if data.exists() else None


def _link(v2: Path, kind: str, digest: str) -> bytes | None:
    link = v2 / "repositories" / REPO / kind / digest.replace(":", "/") / "link"
    return link.read_bytes() if link.exists() else None
