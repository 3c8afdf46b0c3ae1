"""Whether a filesystem makes its metadata changes durable in the order they were made.

On ext4 with a journal (ext3 too, which the ext4 code mounts) and on XFS, every change of
a directory (a ``mkdir``, a ``rename``) joins the journal's running transaction, and
transactions commit in order: an ``fsync`` of a directory commits every change made
before the directory's own last one, in every directory (ext4 commits its whole running
transaction for it, never a fast commit; XFS forces its log up to that change). On those,
a step list (``run_steps``) that renames its files into several directories one after
another can flush one directory at its end, the last name's, and still never let a later
name (a tag) survive a power loss that an earlier one (the revision it names) did not; a
single write flushes only its name's directory, not the parents its ``mkdir`` calls
changed before; each file's data is still flushed before its name is made. Elsewhere
(ext4 without a journal, btrfs, NFS, anything not recognised) each step flushes its
directories before the next step begins.

Read from ``/proc/self/mountinfo`` (the filesystem type of the mount whose device holds
the path) and, for ext4, ``/proc/fs/jbd2/<device>-8`` (there only while a journal is in
use). A store with another filesystem mounted anywhere below its root answers no: its
directories are not all in the one journal; one mounted there later is told by its
device (``st_dev``), which a flush standing for others is checked against. Anything
unreadable answers no: the safe order. An ext4 with its journal on another device is not
recognised (its jbd2 entry is named after that device): it gets the safe order too.
``tests/registry/test_power_loss.py`` checks pushes against a power loss on both.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Filesystem types whose directory changes commit in one ordered journal.
_JOURNALLED_IN_ORDER = {"xfs"}
# Types the ext4 code mounts: in order only with a journal.
_EXT = {"ext4", "ext3"}


def device_in_order(path: Path) -> int | None:
    """The device (``st_dev``) of the filesystem that holds ``path``, or will once it is
    made, if that filesystem commits its metadata changes in order; otherwise None."""
    try:
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent  # a store's root not made yet: where it will be
        device = os.stat(existing).st_dev
        mounts = _mounts()
        if _any_below(os.path.realpath(path), mounts):
            return None
        fstype = _mount_type(os.major(device), os.minor(device), mounts)
        if fstype in _JOURNALLED_IN_ORDER:
            return device
        if fstype in _EXT and _has_journal(os.major(device), os.minor(device)):
            return device
    except OSError:
        pass
    return None


def _mounts() -> list[list[str]]:
    """The fields of each line of ``/proc/self/mountinfo``."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        return [line.split() for line in mounts]


def _any_below(root: str, mounts: list[list[str]]) -> bool:
    """Whether a filesystem is mounted anywhere strictly below ``root`` (mountinfo's
    fifth field, the mount point, with space, tab, newline and backslash octal-escaped)."""
    prefix = root.rstrip("/") + "/"
    for fields in mounts:
        if len(fields) >= 5:
            point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), fields[4])
            if point.startswith(prefix):
                return True
    return False


def _mount_type(major: int, minor: int, mounts: list[list[str]]) -> str | None:
    """The filesystem type mounted from the device ``major:minor`` (mountinfo's third
    field; the type follows the ``-`` separator), or None."""
    wanted = f"{major}:{minor}"
    for fields in mounts:
        if len(fields) < 3 or fields[2] != wanted or "-" not in fields:
            continue
        separator = fields.index("-")
        if separator + 1 < len(fields):
            return fields[separator + 1]
    return None


def _has_journal(major: int, minor: int) -> bool:
    """Whether jbd2 runs a journal for the block device ``major:minor`` (its directory
    is named after the device's kernel name and the journal's inode, 8)."""
    name = Path(os.readlink(f"/sys/dev/block/{major}:{minor}")).name
    return Path(f"/proc/fs/jbd2/{name}-8").is_dir()
