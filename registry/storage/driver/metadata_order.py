"""Whether a filesystem makes its metadata changes durable in the order they were made.

On ext4 with a journal (ext3 too, which the ext4 code mounts) and on XFS, every change of
a directory (a ``mkdir``, a ``rename``) joins the journal's running transaction, and
transactions commit in order: an ``fsync`` of any directory commits every change made
before its own, in every directory. On those, a step list (``run_steps``) that renames
its files into several directories one after another can flush the directories once at
its end and still never let a later name (a tag) survive a power loss that an earlier
one (the revision it names) did not; each file's data is still flushed before its name is
made. Elsewhere (ext4 without a journal, btrfs, NFS, anything not recognised) each step
flushes its directories before the next step begins.

Read from ``/proc/self/mountinfo`` (the filesystem type of the mount whose device holds
the path) and, for ext4, ``/proc/fs/jbd2/<device>-8`` (there only while a journal is in
use). Anything unreadable answers no: the safe order.
"""

from __future__ import annotations

import os
from pathlib import Path

# Filesystem types whose directory changes commit in one ordered journal.
_JOURNALLED_IN_ORDER = {"xfs"}
# Types the ext4 code mounts: in order only with a journal.
_EXT = {"ext4", "ext3"}


def keeps_metadata_in_order(path: Path) -> bool:
    """Whether the filesystem holding ``path`` (which exists) commits its metadata
    changes in the order they were made (see the module's docstring)."""
    try:
        device = os.stat(path).st_dev
        fstype = _mount_type(os.major(device), os.minor(device))
        if fstype in _JOURNALLED_IN_ORDER:
            return True
        if fstype in _EXT:
            return _has_journal(os.major(device), os.minor(device))
    except OSError:
        pass
    return False


def _mount_type(major: int, minor: int) -> str | None:
    """The filesystem type mounted from the device ``major:minor`` (mountinfo's third
    field; the type follows the ``-`` separator), or None."""
    wanted = f"{major}:{minor}"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
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
