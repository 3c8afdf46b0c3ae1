"""The mounts a test's process left below a scratch directory, and taking them down.

dockerd mounts network namespaces (``nsfs``, e.g. ``<exec-root>/netns/default`` once a
container has used the host network) and its storage driver's directories, and leaves
some of them mounted when it exits. A directory with a mount below it cannot be removed,
so a test that starts an engine must unmount everything under its directory before it
deletes it, or the mounts outlive the test run.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.tools import unavailable

MOUNTINFO = Path("/proc/self/mountinfo")
# A mount stacked on a mount needs one pass per layer; nothing real comes near this.
MAX_PASSES = 10
_ESCAPE = re.compile(r"\\([0-7]{3})")


def mounts_below(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, in the order to unmount them: deepest
    first, and of mounts stacked on one point the most recent first."""
    top = directory.resolve()
    found: list[tuple[int, int, Path]] = []
    for index, line in enumerate(MOUNTINFO.read_text().splitlines()):
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        point = Path(_ESCAPE.sub(lambda match: chr(int(match[1], 8)), fields[4]))
        if point == top or top in point.parents:
            found.append((len(point.parts), index, point))
    return [point for _, _, point in sorted(found, reverse=True)]


def unmount_below(directory: Path) -> None:
    """Unmount everything at or below ``directory``; AssertionError naming what stays.

    Call it once every process that used the mounts has exited: a plain ``umount`` then
    succeeds, and a lazy one (the fallback) really frees the mount.
    """
    for _ in range(MAX_PASSES):
        points = mounts_below(directory)
        if not points:
            return
        for point in points:
            for command in (["umount", str(point)], ["umount", "--lazy", str(point)]):
                done = subprocess.run(command, capture_output=True, check=False, timeout=30)
                if done.returncode == 0:
                    break
    remaining = mounts_below(directory)
    if remaining:
        raise AssertionError(f"still mounted below {directory}: {remaining}")


@contextlib.contextmanager
def mounted(options: Sequence[str], source: str, mount_point: Path, what: str) -> Iterator[Path]:
    """``mount OPTIONS SOURCE MOUNT_POINT`` for the block, then everything at or below
    ``mount_point`` taken down (``unmount_below``). Mounting needs root: elsewhere the
    test skips, except in CI (``unavailable``, naming ``what``)."""
    done = subprocess.run(
        ["mount", *options, source, str(mount_point)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        unavailable(f"cannot mount {what} here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        unmount_below(mount_point)
