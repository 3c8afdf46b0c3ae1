"""A step list run with flushing on, on a filesystem that commits its metadata in order
(``metadata_order``: ext4 with a journal, XFS): every file's data flushed together first,
then each name made in turn, then the last name's directory flushed.

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
   collection takes a link directory without its blob for a dangling link);
4. once every name is made, the directory of the last one is flushed: on these
   filesystems that flush commits every name with it, in the order they were made, so a
   later name (a tag) cannot survive a power loss that an earlier one (its revision) did
   not, and no other directory needs a flush of its own (``_sync_names``). A list that
   fails midway acknowledges nothing; what it named, the caller undoes (or the next flush
   commits).

2 commits for a blob's commit instead of 4. Elsewhere a step list runs step by step
(``filesystem_steps``): there the order of directory changes across a power loss is the
order of their flushes, and staging would only add syscalls (ext4 without a journal).

The temporaries wait in a directory of their own, not beside their targets: a link's
directory must not be made early, and no listing (tags, the catalog, a repository's
links) ever sees them. ``.staging`` at the store's root is not part of Distribution's
layout, which lives under ``docker/``; a walk for abandoned temporaries
(``temporaries``) covers it, and a temporary is locked until it has its name. Where the
staging directory cannot be used (it cannot be made, or is removed meanwhile) a step's
content is written beside its target instead, as ``put_file`` does.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.storage.driver import temporaries
from registry.storage.driver.durability import make_dirs, start_writeback, sync_dir, sync_dir_if_on
from registry.storage.driver.filesystem_steps import (
    LocalMove,
    LocalPut,
    LocalStep,
    despite_concurrent_deletes,
    flush_source,
    put_file,
    rename_into,
)
from registry.storage.driver.filesystem_writer import no_space_is_storage_full

STAGING = ".staging"
# Errors of a write that found no space: the client is told so (507), never staged around.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(slots=True)
class _Staged:
    fd: int
    temporary: Path


def run_staged(steps: Sequence[LocalStep], staging: Path, device: int) -> None:
    """Run ``steps`` as the module's docstring says, on the store's filesystem whose
    device is ``device``."""
    staged: dict[int, _Staged] = {}
    changed: list[Path] = []
    last_named: Path | None = None  # the directory the list's latest name was made in
    try:
        for index, step in enumerate(steps):
            if isinstance(step, LocalPut):
                kept = _stage(staging, step)
                if kept is not None:  # else written at its turn, beside its target
                    staged[index] = kept
            elif isinstance(step, LocalMove):
                _start_source_writeback(step)
        for index, step in enumerate(steps):
            if index in staged and isinstance(step, LocalPut):
                with no_space_is_storage_full(step.path):
                    os.fdatasync(staged[index].fd)
            elif isinstance(step, LocalMove) and step.expected is not None:
                # Before the move's check of its source's content (``holding``), not
                # under it: an upload changes only by appends, which change its size,
                # so a source that still holds what was checked holds what was flushed.
                # A source not checked is flushed at its turn, under the writers' lock.
                with no_space_is_storage_full(step.destination):
                    flush_source(step.src, step.source)
        for index, step in enumerate(steps):
            if isinstance(step, LocalPut):
                placed, made = _place(staged.pop(index, None), step)
                if not placed:
                    # Written beside its target, flushed: after the earlier steps'
                    # directories, so that its name is not made durable before theirs,
                    # and with the directories made for it before the next name.
                    _sync_present(changed, step.path)
                    put_file(step.full, step.path, step.content, True)
                    _sync_present(made, step.path)
                    last_named = None  # every name so far flushed
                else:
                    changed += made
                    last_named = step.full.parent
            elif isinstance(step, LocalMove):
                with no_space_is_storage_full(step.destination):
                    changed += rename_into(
                        step.src,
                        step.dst,
                        step.source,
                        step.destination,
                        step.expected,
                        flush_data=step.expected is None,
                    )
                last_named = step.dst.parent
            else:
                step()
    finally:
        for left in staged.values():  # a step failed before their turn
            temporaries.discard(left.fd, left.temporary)
    _sync_names(last_named, changed, device, _last_target(steps))


def _sync_names(last_named: Path | None, changed: list[Path], device: int, path: str) -> None:
    """Make every name of the list durable: flush the directory of the last one made
    (``sync_named``: on these filesystems that flush commits every earlier change with
    it, in order; each further directory's flush could only wait for a later commit, made
    for another request's change there). Where a concurrent delete removed it (a tag
    deleted as it was pushed), or it is on another filesystem mounted in the store since
    (``device`` is the store's), every directory still present instead, in the order of
    the names."""
    if last_named is not None:
        with no_space_is_storage_full(path):
            try:
                flushed = sync_dir_if_on(last_named, device)
            except (FileNotFoundError, NotADirectoryError):
                flushed = False
        if flushed:
            changed.clear()
            return
    _sync_present(changed, path)


def _sync_present(directories: list[Path], path: str) -> None:
    """Flush each of ``directories`` once (and forget them) but those a concurrent delete
    removed meanwhile (a tag or a manifest deleted as it was pushed): what was added
    there is gone with them, and making that durable is the delete's own business. The
    flushes now wait until the end of the list, so that window is no longer a rename's
    few microseconds."""
    with no_space_is_storage_full(path):
        for directory in dict.fromkeys(directories):
            try:
                sync_dir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
    directories.clear()


def _last_target(steps: Sequence[LocalStep]) -> str:
    """The driver path the list wrote last, for a full disk's error."""
    for step in reversed(steps):
        if isinstance(step, LocalPut):
            return step.path
        if isinstance(step, LocalMove):
            return step.destination
    return ""


def _stage(staging: Path, step: LocalPut) -> _Staged | None:
    """The content of ``step`` in a locked temporary in ``staging``, its write-out
    started; None where the staging directory cannot be used (the step is then written
    at its turn, beside its target)."""
    with no_space_is_storage_full(step.path):
        try:
            try:
                fd, temporary = temporaries.create_locked(staging / step.full.name)
            except FileNotFoundError:  # the store's first staged write
                os.makedirs(staging, exist_ok=True)
                fd, temporary = temporaries.create_locked(staging / step.full.name)
        except OSError as error:
            if error.errno in _NO_SPACE:
                raise
            return None  # not writable there, say: nothing staged, nothing lost
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


def _place(staged: _Staged | None, step: LocalPut) -> tuple[bool, list[Path]]:
    """Rename the staged temporary to its target, making the target's directories
    (unlocked once named): whether it was, and the directories whose entries changed.
    Not without a staged temporary, nor where it cannot be renamed (the target on another
    filesystem, the staging directory removed meanwhile): the caller then writes the
    step beside its target, and the directories made here still need their flush."""
    changed: list[Path] = []
    if staged is None:
        return False, changed

    def rename() -> None:
        changed.extend([step.full.parent, *make_dirs(step.full.parent)])
        os.replace(staged.temporary, step.full)

    try:
        with no_space_is_storage_full(step.path):
            despite_concurrent_deletes(rename)
    except OSError as error:
        vanished = error.errno == errno.ENOENT and not os.path.lexists(staged.temporary)
        temporaries.discard(staged.fd, staged.temporary)
        if error.errno != errno.EXDEV and not vanished:
            raise
        return False, list(dict.fromkeys(changed))
    except BaseException:
        temporaries.discard(staged.fd, staged.temporary)
        raise
    os.close(staged.fd)  # only now: the lock tells sweepers the temporary is alive
    return True, list(dict.fromkeys(changed))
