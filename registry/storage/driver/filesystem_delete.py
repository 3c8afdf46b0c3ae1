"""Deleting files and trees on the filesystem driver: one path at a time (``delete``),
and many at once for garbage collection (``delete_many``), both safe beside concurrent
writers of the same trees.

Run as a program (``python -I -S filesystem_delete.py ROOT PARENT``, standard library and
``shared.parent_death`` only: ``child_program``) it is a deleting child of
``filesystem_deleters``: ``serve``."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import stat
from collections.abc import Sequence

# As a deleting child this file is a program of its own, started for every collection:
# what only the general way (``delete_tree``) or the type checker needs is imported when
# needed, which cut the child's start-up by a third (typing, pathlib and shutil were
# 9 ms of its 28; docs/performance.md, "Lean child programs").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO

# A write and a delete of the same directory tree may overlap (a tag pushed while it is
# deleted); the one that loses the race retries this many times.
RACE_ATTEMPTS = 20
_RACE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, None})
# Fewest paths one thread job of delete_many deletes: a hop to a thread costs ~50 us.
DELETE_MIN_BATCH = 8


def runs_by_parent(full: Sequence[str], size: int) -> list[Sequence[str]]:
    """``full`` (sorted by parent directory) cut into runs of about ``size`` paths, one
    thread job each, never cutting a parent's paths in two: two threads deleting in one
    directory at once spin on its lock (an ``rmdir`` holds its parent's ``i_rwsem`` for
    writing), which was a fifth of a collection's CPU time under ``perf``."""
    runs: list[Sequence[str]] = []
    start = 0
    while start < len(full):
        end = min(start + size, len(full))
        parent = full[end - 1].rpartition("/")[0]
        while end < len(full) and full[end].rpartition("/")[0] == parent:
            end += 1
        runs.append(full[start:end])
        start = end
    return runs


def deleted_all(full: Sequence[str], sole_file: str | None) -> list[int | None]:
    """Delete each of ``full`` (local paths, sorted by parent directory): what
    ``deleted`` returns for each.

    With ``sole_file`` (a blob's ``data``, a link's ``link``), each path is expected to
    be a directory holding that file only: four calls each (that it is a directory and
    not a symbolic link, the file's size, its unlink, the rmdir), relative to its parent
    directory opened once for the run of its paths, instead of a stat of the directory,
    a listing (open, two reads, close), then the same three. Anything else (no such
    file, another entry beside it, not a directory, a symbolic link) takes ``deleted``'s
    general way."""
    if sole_file is None:
        return [deleted(path) for path in full]
    results: list[int | None] = []
    for parent, paths in itertools.groupby(full, key=lambda path: path.rpartition("/")[0]):
        names = [path.rpartition("/")[2] for path in paths]
        try:
            directory = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            results += [None] * len(names)
            continue
        try:
            results += [_sole_file_deleted(directory, parent, name, sole_file) for name in names]
        finally:
            os.close(directory)
    return results


def _sole_file_deleted(directory: int, parent: str, name: str, sole_file: str) -> int | None:
    inner = f"{name}/{sole_file}"
    try:
        # ``name`` itself must be a directory, not a symbolic link to one: the paths
        # below it would be resolved through the link, and another directory's file
        # deleted. The general way deletes the link alone.
        if not stat.S_ISDIR(os.lstat(name, dir_fd=directory).st_mode):
            return deleted(f"{parent}/{name}")
        size = os.lstat(inner, dir_fd=directory).st_size
        os.unlink(inner, dir_fd=directory)
    except OSError:  # not there, not a file, or gone meanwhile: decided by a listing
        return deleted(f"{parent}/{name}")
    try:
        os.rmdir(name, dir_fd=directory)
    except FileNotFoundError:
        pass  # removed by a concurrent deleter: gone all the same
    except OSError:  # another entry beside it (a concurrent writer's): the general way
        more = deleted(f"{parent}/{name}")
        return size + (more or 0)
    return size


def deleted(full: str) -> int | None:
    """Delete a file or a tree: the bytes of the files removed, or None when nothing was
    there. The directories of links and blobs hold files only: they go with a stat and
    an unlink per file and one rmdir, far cheaper than ``shutil.rmtree``; anything else
    (a subdirectory: the rmdir fails; a concurrent writer) takes ``delete_tree``'s
    general way, sized first."""
    try:
        info = os.lstat(full)
        if not stat.S_ISDIR(info.st_mode):  # a file, or a link: never followed
            os.unlink(full)
            return info.st_size
        with os.scandir(full) as entries:
            files = [entry for entry in entries if not entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return None
    removed = 0
    try:
        for entry in files:
            removed += entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        os.rmdir(full)
    except OSError:
        removed += _tree_size(full)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            from pathlib import Path

            delete_tree(Path(full))  # it was there when listed: deleted, whoever finished
    return removed


def removed(full: str) -> bool:
    """Delete a file or a tree, sizes untold; whether anything was there (gone meanwhile
    counts as there, as for ``delete_tree``). A directory of files only (an upload's
    after its commit, a link's) goes with its listing, an unlink per file and one rmdir:
    7 calls for one file where ``shutil.rmtree`` took 15, each in a file thread a
    hand-over of the interpreter lock (issue 17). One with a subdirectory (an upload's
    hash states, a tag's index) goes to ``delete_tree`` as soon as the listing shows
    one, as does anything changed under the fast way (a concurrent writer's entry)."""
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return False
    try:
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(full)  # a file, or a link: never followed
            return True
        files = _files_only(full)
        if files is not None:
            for name in files:
                os.unlink(name)
            os.rmdir(full)
            return True
    except OSError:
        pass  # changed meanwhile: the general way, which copes with every race
    from pathlib import Path  # here: the collection's child programs import this module

    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        delete_tree(Path(full))  # it was there: deleted, whoever finished
    return True


def _files_only(directory: str) -> list[str] | None:
    """The paths of ``directory``'s entries, or None if one of them is a directory."""
    files = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return None
            files.append(entry.path)
    return files


def _tree_size(full: str) -> int:
    """The bytes of the files still under ``full`` (what a general delete will free)."""
    size = 0
    for directory, _subdirectories, files in os.walk(full):
        for name in files:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(directory, name)).st_size
    return size


def delete_tree(full: Path) -> None:
    """Delete a file or a whole tree, even while a concurrent write adds entries to it
    (rmdir fails with ENOTEMPTY), removes some (FileNotFoundError mid-walk) or turns a
    missing path into a directory (EISDIR): tried again, the delete happens after that
    write. FileNotFoundError only when nothing was there; gone meanwhile is success."""
    import shutil

    for attempt in range(1, RACE_ATTEMPTS + 1):
        was_tree = full.is_dir() and not full.is_symlink()
        try:
            if was_tree:
                shutil.rmtree(full)
            else:
                full.unlink()
            return
        except OSError as error:
            if not os.path.lexists(full):
                if was_tree or attempt > 1:
                    return  # it was there: a concurrent delete finished the job
                # Missing at the start (perhaps briefly created and removed meanwhile).
                raise FileNotFoundError(
                    errno.ENOENT, os.strerror(errno.ENOENT), str(full)
                ) from None
            # errno None: rmtree's own "Cannot call rmtree on a symbolic link", raised
            # when the directory was replaced between its lstat and its open.
            if error.errno not in _RACE_ERRNOS or attempt == RACE_ATTEMPTS:
                raise


def refused(root: str, full: str) -> bool:
    """Whether a deleting child must refuse ``full``: anything but an absolute path
    strictly below ``root`` without ``.`` or ``..`` components (the parent builds its
    paths from the root, so a refusal means a bug, never a deletion outside)."""
    prefix = root.rstrip("/") + "/"
    # Empty parts are doubled slashes, harmless: a root of "/" makes every path "//..."
    # (the driver joins the root and a storage path that begins with "/").
    parts = [part for part in full[len(prefix) :].split("/") if part]
    return not full.startswith(prefix) or not parts or any(p in (".", "..") for p in parts)


def serve(root: str, requests: IO[str], replies: IO[str]) -> None:
    """A deleting child's loop (see ``filesystem_deleters``): one request a line, a JSON
    ``[sole_file, [path, ...]]``; one reply a line, the JSON list of what ``deleted_all``
    returned, or ``{"refused": path}`` (and nothing of that request deleted). Ends at the
    end of ``requests``."""
    for line in requests:
        sole_file, full = json.loads(line)
        outside = next((path for path in full if refused(root, path)), None)
        reply = {"refused": outside} if outside is not None else deleted_all(full, sole_file)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":  # a deleting child: python -I -S filesystem_delete.py ROOT PARENT
    import signal
    import sys

    # No site (child_program): the project's packages are beside this file's package.
    # <root>/registry/storage/driver/filesystem_delete.py: <root> holds ``shared``.
    sys.path.append(os.path.abspath(__file__).rsplit(os.sep, 4)[0])
    from shared.parent_death import die_with_parent  # standard library only, as this file

    die_with_parent(int(sys.argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's to handle: it kills us
    serve(sys.argv[1], sys.stdin, sys.stdout)
