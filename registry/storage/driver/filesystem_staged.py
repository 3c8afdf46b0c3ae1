"""A step list run with flushing on (``FilesystemDriver.run_steps``): every file's data
flushed together first, then each name made in turn.

On a journalling filesystem a flush waits for a journal commit, and each commit holds
every change made before it. Run one step after another (data flushed, renamed,
directories flushed, then the next file), a blob's commit waited for 4 commits and the
tag's two links for 4 (docs/performance.md, "Pushes on a journaled filesystem"). Here:

1. every ``Put``'s content is written to a temporary in the store's **staging
   directory** and its write-out started (which allocates its blocks), and each
   ``Move``'s source has its write-out started;
2. each of those files is flushed: the first flush commits the blocks of all of them, the
   others find theirs committed;
3. the steps run in order, each making its directories and its name at its turn (a
   link's directory never exists before the blob it names is in place: online
   collection takes a link directory without its blob for a dangling link), and each
   flushes the directories it changed before the next begins, or, where the filesystem
   commits directory changes in order (``metadata_order``), all of them once at the end.

The temporaries wait in a directory of their own, not beside their targets: a link's
directory must not be made early, and no listing (tags, the catalog, a repository's
links) ever sees them. ``.staging`` at the store's root is not part of Distribution's
layout, which lives under ``docker/``; a walk for abandoned temporaries
(``temporaries``) covers it, and a temporary is locked until it has its name. A target
on another filesystem than the staging directory (a separate mount inside the store) is
written beside it instead, as ``put_file`` does.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.storage.driver import temporaries
from registry.storage.driver.base import Content
from registry.storage.driver.durability import make_dirs, start_writeback, sync_dirs
from registry.storage.driver.filesystem_steps import (
    despite_concurrent_deletes,
    flush_source,
    put_file,
    rename_into,
)
from registry.storage.driver.filesystem_writer import no_space_is_storage_full

STAGING = ".staging"


@dataclass(frozen=True, slots=True)
class LocalPut:
    """A ``Put`` with its local path."""

    full: Path
    path: str
    content: bytes


@dataclass(frozen=True, slots=True)
class LocalMove:
    """A ``Move`` with its local paths."""

    src: Path
    dst: Path
    source: str
    destination: str
    expected: Content | None


# Any other step (a delete, a touch) runs as it is, at its turn.
LocalStep = LocalPut | LocalMove | Callable[[], None]


@dataclass(slots=True)
class _Staged:
    fd: int
    temporary: Path


def run_staged(steps: Sequence[LocalStep], staging: Path, in_order: bool) -> None:
    """Run ``steps`` as the module's docstring says; ``in_order``: the filesystem commits
    directory changes in order, so the directories are flushed once, at the end."""
    staged: dict[int, _Staged] = {}
    changed: list[Path] = []
    try:
        for index, step in enumerate(steps):
            if isinstance(step, LocalPut):
                staged[index] = _stage(staging, step)
            elif isinstance(step, LocalMove):
                _start_source_writeback(step)
        for index, step in enumerate(steps):
            if isinstance(step, LocalPut):
                with no_space_is_storage_full(step.path):
                    os.fdatasync(staged[index].fd)
            elif isinstance(step, LocalMove):
                # Before the move's check of its source's content (``holding``), not
                # under it: an upload changes only by appends, which change its size,
                # so a source that still holds what was checked holds what was flushed.
                flush_source(step.src, step.source)
        for index, step in enumerate(steps):
            if isinstance(step, LocalPut):
                names = _place(staged.pop(index), step)
            elif isinstance(step, LocalMove):
                with no_space_is_storage_full(step.destination):
                    names = rename_into(
                        step.src,
                        step.dst,
                        step.source,
                        step.destination,
                        step.expected,
                        flush_data=False,  # flushed above
                    )
            else:
                step()
                continue
            if in_order:
                changed.extend(names)
            else:
                sync_dirs(names)
    finally:
        for left in staged.values():  # a step failed before their turn
            temporaries.discard(left.fd, left.temporary)
    # Only when every step is done: a failed list answers an error, acknowledging none
    # of it, and what it named the caller undoes (or a later flush commits).
    sync_dirs(list(dict.fromkeys(changed)))


def _stage(staging: Path, step: LocalPut) -> _Staged:
    """The content of ``step`` in a locked temporary in ``staging``, its write-out
    started."""
    with no_space_is_storage_full(step.path):
        try:
            fd, temporary = temporaries.create_locked(staging / step.full.name)
        except FileNotFoundError:  # the store's first staged write
            os.makedirs(staging, exist_ok=True)
            fd, temporary = temporaries.create_locked(staging / step.full.name)
        try:
            view = memoryview(step.content)
            while view:
                view = view[os.write(fd, view) :]
            start_writeback(fd, 0, len(step.content))
        except BaseException:
            temporaries.discard(fd, temporary)
            raise
    return _Staged(fd, temporary)


def _start_source_writeback(step: LocalMove) -> None:
    """Start writing out what of a ``Move``'s source is still only in memory (most of a
    large upload is already written: its writer starts write-out as data arrives)."""
    try:
        fd = os.open(step.src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # only a hint: the flush that follows reports a missing source
    try:
        start_writeback(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _place(staged: _Staged, step: LocalPut) -> list[Path]:
    """Rename the staged temporary to its target, making the target's directories; the
    directories whose entries changed. Unlocked once named."""
    changed: list[Path] = []

    def rename() -> None:
        changed.extend([step.full.parent, *make_dirs(step.full.parent)])
        os.replace(staged.temporary, step.full)

    try:
        with no_space_is_storage_full(step.path):
            despite_concurrent_deletes(rename)
    except OSError as error:
        temporaries.discard(staged.fd, staged.temporary)
        if error.errno != errno.EXDEV:
            raise
        # The target is on another filesystem than the staging directory: written
        # beside it instead, durably, as a single put_content is.
        put_file(step.full, step.path, step.content, True)
        return []
    except BaseException:
        temporaries.discard(staged.fd, staged.temporary)
        raise
    os.close(staged.fd)  # only now: the lock tells sweepers the temporary is alive
    return list(dict.fromkeys(changed))
