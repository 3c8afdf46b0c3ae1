"""What a 201 acknowledges survives a power loss right after it, on a journalled ext4 and
on XFS (real ones, loop-mounted from a file), as production volumes are.

The power loss: right after each 201, the file that holds the filesystem is copied while
the registry keeps it mounted. The copy holds what reached the block device by then and
nothing of what only sits in memory (the page cache, the journal's running transaction),
which is what a machine that loses power keeps; mounting the copy replays its journal, as
the next boot would. The ext4 is mounted with ``commit=300`` so that the journal's own
timer (every 5 s by default) cannot commit on the registry's behalf in between; XFS's log
worker runs every 30 s. Something else flushing the filesystem meanwhile (a ``sync`` on
the machine) could only make a copy hold more.

A push that flushes nothing loses its tag in the same test: the method can tell.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from registry.storage.driver.metadata_order import device_in_order
from tests.support.ext4 import image_of, journal_commits, mounted_ext4, mounted_xfs
from tests.support.mounts import unmount_below
from tests.support.oci import Image, make_image, sha256_digest
from tests.support.portside_servers import filesystem_registry
from tests.support.upstreams import push_blob_data, put_manifest

REPO = "durable/after-power-loss"
TAG = "latest"
# The control's tries: a commit someone else forced during one makes it say nothing.
CONTROL_TRIES = 3

Mount = Callable[[Path], AbstractContextManager[Path]]
FILESYSTEMS: dict[str, Mount] = {
    # 64 MiB, sparse: a copy takes a fraction of a second.
    "ext4": lambda disk: mounted_ext4(disk, size=64 * 1024 * 1024, options=["commit=300"]),
    "xfs": lambda disk: mounted_xfs(disk),
}


@dataclass(frozen=True)
class Crash:
    """The filesystem's file copied right after a 201, and how many journal commits the
    request and the copy spanned (ext4; 0 elsewhere)."""

    copy: Path
    commits: int


@pytest.mark.parametrize("filesystem", sorted(FILESYSTEMS))
async def test_each_acknowledged_push_step_survives_a_power_loss(
    tmp_path: Path, filesystem: str
) -> None:
    image = make_image(layer_count=2, layer_size=1024 * 1024, seed="power-loss")
    crashes = await _push_crashing_after_each_201(tmp_path, image, filesystem, fsync="true")
    try:
        _check_each_step_survived(image, crashes)
    finally:
        _remove(crashes)


def _check_each_step_survived(image: Image, crashes: list[Crash]) -> None:
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
    manifest's 201 holds no tag, so the test above sees what flushing made durable. The
    registry then forces no journal commit; a try during which one happened anyway (a
    ``sync`` elsewhere on the machine) is tried again."""
    image = make_image(layer_count=1, layer_size=64 * 1024, seed="power-loss-control")
    for attempt in range(CONTROL_TRIES):
        run = tmp_path / f"try{attempt}"
        run.mkdir()
        crashes = await _push_crashing_after_each_201(run, image, "ext4", fsync="false")
        try:
            if crashes[-1].commits:
                continue
            with _after_power_loss(crashes[-1]) as v2:
                tag = v2 / "repositories" / REPO / "_manifests/tags" / TAG / "current/link"
                assert not tag.exists()
            return
        finally:
            _remove(crashes)
    pytest.fail(f"the journal committed during each of {CONTROL_TRIES} tries: nothing to tell")


async def _push_crashing_after_each_201(
    tmp_path: Path, image: Image, filesystem: str, fsync: str
) -> list[Crash]:
    """Push ``image`` (each blob, then the manifest by tag) to a registry storing on a
    new ``filesystem``; after each 201, a copy of the filesystem as a power loss would
    leave it. The copies, in the order of the 201s."""
    disk = tmp_path / "disk"
    disk.mkdir()
    crashes: list[Crash] = []
    try:
        with FILESYSTEMS[filesystem](disk) as mount_point:
            await _push_onto(mount_point, disk, tmp_path, image, fsync, crashes)
    except BaseException:
        _remove(crashes)
        raise
    return crashes


async def _push_onto(
    mount_point: Path, disk: Path, tmp_path: Path, image: Image, fsync: str, crashes: list[Crash]
) -> None:
    if fsync == "true":  # the path under test: the one for filesystems that keep order
        assert device_in_order(mount_point) == os.stat(mount_point).st_dev
    # The registry's own files (its log) stay off the filesystem under test.
    registry = filesystem_registry(
        tmp_path,
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(mount_point / "data"),
        REGISTRY_STORAGE_FILESYSTEM_FSYNC=fsync,
        REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED="false",
    )
    registry.start()
    try:
        async with aiohttp.ClientSession() as session:
            for digest, data in image.blobs.items():
                before = _commits(mount_point)
                await push_blob_data(session, registry.url, REPO, digest, data)
                crashes.append(_power_loss_copy(disk, mount_point, tmp_path, crashes, before))
            before = _commits(mount_point)
            await put_manifest(session, registry.url, REPO, TAG, image.manifest)
            crashes.append(_power_loss_copy(disk, mount_point, tmp_path, crashes, before))
    finally:
        registry.stop()


def _commits(mount_point: Path) -> int:
    """The ext4 journal's commits so far (0 on XFS: not counted there)."""
    if _is_xfs(mount_point):
        return 0
    return journal_commits(mount_point)


def _is_xfs(mount_point: Path) -> bool:
    """Whether ``mount_point`` holds an XFS (``stat``'s filesystem type)."""
    done = subprocess.run(
        ["stat", "-f", "-c", "%T", str(mount_point)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "xfs"


def _power_loss_copy(
    disk: Path, mount_point: Path, tmp_path: Path, crashes: list[Crash], before: int
) -> Crash:
    """The filesystem's file as it is now on the block device (the registry still has it
    mounted)."""
    directory = tmp_path / f"crash{len(crashes)}"
    directory.mkdir()
    copy = image_of(directory)
    try:
        subprocess.run(
            ["cp", "--sparse=always", str(image_of(disk)), str(copy)], check=True, timeout=60
        )
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return Crash(copy, _commits(mount_point) - before)


@contextlib.contextmanager
def _after_power_loss(crash: Crash) -> Iterator[Path]:
    """The copy mounted (its journal replayed, as at the next boot); the registry's
    ``v2`` directory in it. Unmounted and removed afterwards. A copy that does not mount
    fails the test: the mount of the original showed that mounting works here. (The
    copies share the original's UUID, which XFS refuses twice at once: each is mounted
    alone, after the original is unmounted.)"""
    mount_point = crash.copy.parent / "mnt"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-o", "loop", str(crash.copy), str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"the filesystem after the power loss does not mount: {done.stderr.strip()}")
    try:
        yield mount_point / "data/docker/registry/v2"
    finally:
        unmount_below(mount_point)


def _remove(crashes: list[Crash]) -> None:
    for crash in crashes:
        crash.copy.unlink(missing_ok=True)


def _blob(v2: Path, digest: str) -> bytes | None:
    algorithm, hex_digest = digest.split(":", 1)
    data = v2 / "blobs" / algorithm / hex_digest[:2] / hex_digest / "data"
    return data.read_bytes() if data.exists() else None


def _link(v2: Path, kind: str, digest: str) -> bytes | None:
    link = v2 / "repositories" / REPO / kind / digest.replace(":", "/") / "link"
    return link.read_bytes() if link.exists() else None
