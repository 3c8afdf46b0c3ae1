"""The temporary files of the filesystem driver's atomic writes, and their clean-up.

``put_content`` writes ``.<name>.<uuid>.tmp`` beside the target and renames it over the
target (a step list's writes wait in the store's ``.staging`` directory instead:
``filesystem_staged``). A process killed in between (SIGKILL, OOM, power loss) leaves the temporary
behind, and nothing else would ever remove it. Each writer therefore holds an exclusive
``flock`` on its temporary until the rename: a temporary nobody holds a lock on belongs
to a dead writer and can be removed at once, even while other processes (``--workers``,
other instances on the same storage) are writing theirs. Temporaries left by versions
that did not lock are unlocked too, so they are removed as well.

For a collection the walk that finds them runs as this file's own program (``python -I -S
temporaries.py ROOT PARENT``, importing nothing but the standard library and
``shared.parent_death``: ``child_program``), in a process of its own: see
``remove_abandoned_apart``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import stat
import sys
import uuid
from pathlib import Path

# This very file, run as the walk's program (an absolute path: the child's current
# directory is not the caller's concern).
_PROGRAM = os.path.abspath(__file__)
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and _TEMPORARY.fullmatch(name) is not None


def create_locked(target: Path) -> tuple[int, Path]:
    """Create a new temporary for ``target`` in its directory and lock it; the caller
    writes through the descriptor, renames the path and then closes the descriptor."""
    while True:
        path = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A sweeper may have locked and removed it between the open and our lock: it then
        # has no name any more, and we start again with a new one.
        if os.fstat(fd).st_nlink > 0:
            return fd, path
        os.close(fd)


def remove_if_abandoned(path: Path) -> bool:
    """Remove a temporary unless a live writer holds its lock; whether it was removed."""
    try:
        # O_NONBLOCK: a FIFO or a device given a temporary's name must not hold the walk
        # in open() (a FIFO's open waits for a writer); it is then no temporary anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # renamed by its writer meanwhile, or a symbolic link
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def remove_abandoned(root: Path) -> int:
    """Walk ``root`` and remove every abandoned temporary; how many were removed.

    One ``scandir`` per directory and nothing else: the entry types come with the
    listing, so a store of a hundred thousand directories is walked in about a second,
    mostly in the kernel (``os.walk`` builds lists and paths it does not need here). A
    directory that vanishes meanwhile (a concurrent delete) is passed over."""
    removed = 0
    pending = [os.fspath(root)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif is_temporary(entry.name) and remove_if_abandoned(Path(entry.path)):
                        removed += 1
        except OSError:
            continue
    return removed


async def remove_abandoned_apart(root: Path) -> int:
    """``remove_abandoned`` in a child process; how many were removed.

    The walk lists every directory of the store (131,000 in the benchmark's store of
    10,000 manifests: about 1 s of CPU, most of it in the kernel). In a thread it held
    the caller's interpreter lock between its calls and slowed whatever the caller did
    beside it (a collection's reading and marking, by half again); a process runs on
    another core. It imports nothing but the standard library (and
    ``shared.parent_death``, which imports no more), so it starts in about 20 ms
    (``child_program``: ``-I -S``, no ``PYTHON*`` variables, no ``site``, neither the
    current nor the script's directory on the path).

    The walk must not outlive its caller: cancelled, the caller kills it; killed, the
    kernel kills it (``die_with_parent``). Ctrl-C is the caller's to handle (the terminal
    signals the whole process group): the walk ignores SIGINT and is killed as cancelled.
    A walk that fails (it could not start, or it died) costs nothing the collection did:
    it is logged and counts 0, and its temporaries are left for the next walk."""
    # Imported here, in the caller: as the walk's program this file imports nothing of
    # the project's before its main block has put the project on the path, and neither
    # asyncio nor logging, which were most of its start-up (about 30 ms of CPU).
    import asyncio
    import logging

    from registry.storage.driver import child_program
    from shared import cpu_affinity

    log = logging.getLogger("registry.storage.temporaries")

    try:
        process = await asyncio.create_subprocess_exec(
            *child_program.command(_PROGRAM, os.fspath(root), str(os.getpid())),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:  # no process to be had (a pids limit, no memory)
        log.warning("the walk for abandoned temporaries could not start: %s", error)
        return 0
    cpu_affinity.release(process.pid)
    try:
        out, err = await process.communicate()
    except BaseException:  # cancelled: the walk must not outlive its caller
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        log.warning(
            "the walk for abandoned temporaries failed (exit %s): %s",
            process.returncode,
            " ".join(tail),
        )
        return 0
    return int(out)


def discard(fd: int, path: Path) -> None:
    """Give up a temporary that was not renamed (a failed write): remove it, unlock it."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


if __name__ == "__main__":  # remove_abandoned_apart's child: the count on standard output
    # No site (child_program): the project's packages are beside this file's package.
    # <root>/registry/storage/driver/temporaries.py: <root> holds ``shared``.
    sys.path.append(_PROGRAM.rsplit(os.sep, 4)[0])
    from shared.parent_death import die_with_parent  # standard library only, as this file

    die_with_parent(int(sys.argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's to handle: it kills us
    print(remove_abandoned(Path(sys.argv[1])))
