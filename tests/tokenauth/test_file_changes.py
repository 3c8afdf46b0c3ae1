"""The users files' and ACL's watch sees a change made to the file itself through another
name, as when the file is bind-mounted on its own and edited in place from the host."""

from __future__ import annotations

import asyncio
import os
import time
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


async def test_writes_to_other_files_beside_them_do_not_mark_the_files(tmp_path: Path) -> None:
    """A log file kept in the configuration's directory is written all the time: those
    writes must not make every login look at the files again, while a write to a watched
    file, or an entry renamed in the directory, still does."""
    users = tmp_path / "users.htpasswd"
    users.write_text("alice:x\n")
    log_file = tmp_path / "tokenauth.log"
    log_file.write_text("")
    changes = FileChanges([users])
    changes.start()
    try:
        assert changes.watching
        for _ in range(3):  # a loop turn late past the once-a-second recheck: try again
            changes.taken()
            started = time.monotonic()
            with log_file.open("a") as log:
                for _ in range(20):
                    log.write("a line\n")
                    log.flush()
            os.chmod(log_file, 0o600)
            await asyncio.sleep(0.05)  # the watch's callback runs meanwhile
            if time.monotonic() - started < RECHECK_INTERVAL / 2:
                break
        assert not changes.possibly_changed
        (tmp_path / "other.new").write_text("")
        (tmp_path / "other.new").replace(tmp_path / "other")  # an entry renamed: looked at
        assert await marked_soon(changes)
        changes.taken()
        with users.open("a") as written:  # the file itself, in place
            written.write("bob:y\n")
        assert await marked_soon(changes)
    finally:
        changes.stop()
