"""The filesystem driver's writes, as plain functions a thread runs: ``put_content``,
``move`` and ``delete`` each call one, and ``run_steps`` calls several in one thread job
(``steps``: one hand-over to a thread for a blob's whole commit instead of three).

With ``flush`` (``storage.filesystem.fsync``) each does what ``durability`` says: the
data first, then the name, then every directory an entry was added to (only the name's
own, where the filesystem commits directory changes in order: ``sync_named``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.storage.driver import temporaries
from registry.storage.driver.base import Content, PathNotFound
from registry.storage.driver.durability import make_dirs, sync_file, sync_named
from registry.storage.driver.filesystem_delete import RACE_ATTEMPTS, removed
from registry.storage.driver.filesystem_writer import holding, no_space_is_storage_full


@dataclass(frozen=True, slots=True)
class LocalPut:
    """A ``Put`` step with its local path."""

    full: Path
    path: str
    content: bytes


@dataclass(frozen=True, slots=True)
class LocalMove:
    """A ``Move`` step with its local paths."""

    src: Path
    dst: Path
    source: str
    destination: str
    expected: Content | None


# Any other step (a delete, a touch) is run as it is, at its turn.
LocalStep = LocalPut | LocalMove | Callable[[], None]


def run_in_turn(steps: Sequence[LocalStep], flush: bool) -> None:
    """Each step as its own method would, one after another: with ``flush``, each
    file's data, name and directories flushed before the next step begins."""
    for step in steps:
        if isinstance(step, LocalPut):
            put_file(step.full, step.path, step.content, flush)
        elif isinstance(step, LocalMove):
            move_file(step.src, step.dst, step.source, step.destination, step.expected, flush)
        else:
            step()


def put_file(
    full: Path, path: str, content: bytes, flush: bool, *, ordered_device: int | None = None
) -> None:
    """Replace the file ``full`` (driver path ``path``) atomically with ``content``;
    ``ordered_device``: the store's filesystem, where it commits directory changes in
    order (``sync_named``)."""

    def write() -> None:
        created = make_dirs(full.parent)
        fd, temporary = temporaries.create_locked(full)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if flush:
                os.fdatasync(fd)
            os.replace(temporary, full)
        except BaseException:
            temporaries.discard(fd, temporary)
            raise
        os.close(fd)  # only now: the lock tells sweepers the temporary is alive
        if flush:
            sync_named([full.parent, *created], ordered_device=ordered_device)

    with no_space_is_storage_full(path):
        despite_concurrent_deletes(write)


def move_file(
    src: Path,
    dst: Path,
    source: str,
    destination: str,
    expected: Content | None,
    flush: bool,
    *,
    ordered_device: int | None = None,
) -> None:
    """Rename ``src`` to ``dst`` (driver paths ``source``, ``destination``), only as
    ``expected`` content if given (ContentChanged if not); ``ordered_device`` as for
    ``put_file``."""
    with no_space_is_storage_full(destination):
        changed = rename_into(src, dst, source, destination, expected, flush_data=flush)
        if flush:
            sync_named(changed, ordered_device=ordered_device)


def rename_into(
    src: Path,
    dst: Path,
    source: str,
    destination: str,
    expected: Content | None,
    *,
    flush_data: bool,
) -> list[Path]:
    """``move_file``'s rename, its data flushed first if ``flush_data``; the
    directories whose entries it changed, for the caller to flush: the destination's
    first (its name, the last change), then those ``make_dirs`` changed."""
    changed: list[Path] = []

    def move() -> None:
        if expected is None:
            return rename()
        with holding(os.fspath(src), source, expected):
            return rename()

    def rename() -> None:
        if flush_data:
            # The data first, then the name: a blob is never durably named while its
            # content could still be lost.
            flush_source(src, source)
        # Every attempt's: a directory made by one that a concurrent delete then beat
        # is made again, and both parents' entries changed.
        changed.extend([dst.parent, *make_dirs(dst.parent)])
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            if not os.path.lexists(src):
                raise PathNotFound(source) from None
            raise  # the destination's directory vanished: tried again

    despite_concurrent_deletes(move)
    return list(dict.fromkeys(changed))


def flush_source(src: Path, source: str) -> None:
    """Flush the data of ``src`` (driver path ``source``, PathNotFound if it is gone)."""
    try:
        sync_file(src)
    except FileNotFoundError:
        raise PathNotFound(source) from None


def touch_file(full: Path, path: str) -> None:
    """Set the modified time of ``full`` (driver path ``path``) to now."""
    try:
        os.utime(full)
    except (FileNotFoundError, NotADirectoryError):
        raise PathNotFound(path) from None


def delete_path(full: Path, path: str) -> None:
    """Delete the file or tree ``full``; PathNotFound if nothing was there. A directory
    of files only goes with a listing, an unlink each and a rmdir (``removed``)."""
    try:
        there = removed(os.fspath(full))
    except NotADirectoryError:  # a file where a directory of the path should be
        there = False
    if not there:
        raise PathNotFound(path)


def despite_concurrent_deletes(operation: Callable[[], None]) -> None:
    """Run ``operation``, which creates its parent directories and then writes there,
    again when a concurrent delete removed a directory in between (FileNotFoundError, or
    FileExistsError from ``mkdir(exist_ok=True)`` seeing one vanish): the write then
    simply happens after the delete, as if the two had not overlapped."""
    for attempt in range(1, RACE_ATTEMPTS + 1):
        try:
            operation()
            return
        except PathNotFound:
            raise  # what the operation itself reports missing: no race to retry
        except (FileNotFoundError, FileExistsError):
            if attempt == RACE_ATTEMPTS:
                raise
