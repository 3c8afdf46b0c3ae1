"""A real ext4 filesystem in a file (with or without a journal), or an XFS, loop-mounted
for one test, always unmounted and removed afterwards; and the count of an ext4
journal's commits. Mounting needs root: elsewhere the test skips, except in CI.

Production volumes are journalled, this machine's root filesystem may not be: the order
of a step list's flushes (``filesystem_staged``) depends on which it is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.mounts import mounted
from tests.support.tools import require_tool

IMAGE_SIZE = 256 * 1024 * 1024  # sparse: only what is written takes space
XFS_IMAGE_SIZE = 320 * 1024 * 1024  # mkfs.xfs makes nothing under 300 MiB


@contextlib.contextmanager
def mounted_ext4(
    directory: Path,
    *,
    journal: bool = True,
    size: int = IMAGE_SIZE,
    options: Sequence[str] = (),
) -> Iterator[Path]:
    """A new ext4 of ``size`` bytes (``journal``: with one, as ``mkfs.ext4`` makes it by
    default) in ``directory/ext4.img`` (``image_of``), mounted on ``directory/mnt`` with
    the mount ``options`` besides ``loop``."""
    mkfs = require_tool("mkfs.ext4", "e2fsprogs")
    features = [] if journal else ["-O", "^has_journal"]
    with _mounted_image(directory, [mkfs, "-q", "-F", *features], size, options) as mount_point:
        yield mount_point


@contextlib.contextmanager
def mounted_xfs(
    directory: Path, *, size: int = XFS_IMAGE_SIZE, options: Sequence[str] = ()
) -> Iterator[Path]:
    """A new XFS, as ``mounted_ext4`` makes an ext4 (the same ``image_of``)."""
    mkfs = require_tool("mkfs.xfs", "xfsprogs")
    with _mounted_image(directory, [mkfs, "-q", "-f"], size, options) as mount_point:
        yield mount_point


@contextlib.contextmanager
def _mounted_image(
    directory: Path, mkfs: Sequence[str], size: int, options: Sequence[str]
) -> Iterator[Path]:
    image, mount_point = image_of(directory), directory / "mnt"
    with open(image, "wb") as sparse:
        sparse.truncate(size)
    try:
        subprocess.run([*mkfs, str(image)], check=True, timeout=60)
        mount_point.mkdir()
        # The loop device goes with the mount (``-o loop`` sets autoclear).
        with mounted(
            ["-o", ",".join(["loop", *options])], str(image), mount_point, "a loop-mounted image"
        ):
            yield mount_point
    finally:
        image.unlink(missing_ok=True)


def image_of(directory: Path) -> Path:
    """The file that holds the filesystem ``mounted_ext4(directory)`` made."""
    return directory / "filesystem.img"


def journal_commits(path: Path) -> int:
    """How many transactions the journal of the filesystem holding ``path`` has
    committed so far (``/proc/fs/jbd2/<device>-8/info``)."""
    device = os.stat(path).st_dev
    name = Path(os.readlink(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")).name
    with open(f"/proc/fs/jbd2/{name}-8/info", encoding="ascii") as info:
        return int(info.readline().split()[0])
