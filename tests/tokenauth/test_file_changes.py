"""The users files' and ACL's watch sees a change made to the file itself through another
name, as when the file is bind-mounted on its own and edited in place from the host."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tokenauth.file_changes import RECHECK_INTERVAL, FileChanges


async def marked_soon(changes: FileChanges) -> bool:
    """Whether the files are marked well within the once-a-second recheck, so that only
    the watch can have marked them."""
    for _ in range(int(RECHECK_INTERVAL / 4 / 0.01)):
        if changes.possibly_changed:
            return True
        await asyncio.sleep(0.01)
    return changes.possibly_changed


async def test_a_write_through_another_name_marks_the_file_changed(tmp_path: Path) -> None:
    (tmp_path / "host").mkdir()
    (tmp_path / "service").mkdir()
    host, seen = tmp_path / "host" / "acl.yml", tmp_path / "service" / "acl.yml"
    host.write_text("- match: {account: alice}\n")
    os.link(host, seen)  # one inode, two directories: what a single-file bind mount gives
    changes = FileChanges([seen])
    changes.start()
    try:
        assert changes.watching
        changes.taken()
        assert not changes.possibly_changed
        with host.open("a") as acl:  # written in place, from the "host" side
            acl.write("  actions: ['*']\n")
        # Before, only the service's directory was watched, and nothing happened in it.
        assert await marked_soon(changes)
        # A replaced file is a new inode, watched in its turn.
        changes.taken()
        replacement = tmp_path / "service" / "acl.new"
        replacement.write_text("[]\n")
        replacement.replace(seen)
        await asyncio.sleep(0.05)
        changes.taken()
        os.link(seen, tmp_path / "host" / "acl.2")
        with (tmp_path / "host" / "acl.2").open("a") as acl:
            acl.write("\n")
        assert await marked_soon(changes)
    finally:
        changes.stop()
