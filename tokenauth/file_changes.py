"""Whether the users files or the ACL may have changed, known without a system call per
token request.

A change to a users file or the ACL takes effect on the next token request, so every
request used to look at each file's status (``stat``): those system calls, and the
hand-over of the interpreter lock to the log thread around each, were about a sixth of a
repeat login's CPU time. While tokenauth serves, :class:`FileChanges` keeps an inotify
watch (``inotify_simple``) on the directories that hold the files, on the event loop: any
event there marks the files as possibly changed, and the next request looks at them (and
re-reads only a file whose inode, size or mtime changed).

Why a change still takes effect on the next request: the kernel queues the event before the
write, rename or removal that caused it returns. A request sent after that arrives with the
watch's descriptor already readable, and the event loop runs the watch's callback in the
same turn as the read of the request, before the request's handler runs (handlers run as
tasks, after the turn's I/O callbacks).

What marks them: any event on a file itself, any entry created, removed or renamed in a
watched directory (a symbolic link swapped, a file replaced), and a write to a watched
file's own name. A write to any other file in those directories (a log file kept beside
the configuration, as the bench keeps tokenauth's) does not: each one used to have the
next login look at every file again and renew every watch, a few per cent of a repeat
login's CPU time under load (docs/performance.md#token-issuance-with-workers).

Directories are watched: editors and deployments replace a file by renaming another over
it (Kubernetes swaps a symbolic link in the same directory). A users file that is a
symbolic link has its target's directory watched as well. Each file itself (its inode) is
watched too, and watched again after every event (a replaced file is a new inode): a file
bind-mounted on its own (``./acl.yml:/config/acl.yml`` in compose) and written in place
from the host changes nothing in the directory the service sees. What inotify cannot see
(another machine's change on a network filesystem; a directory of symbolic links swapped
above the watched ones) is taken within a second: the files are also looked at once a
second (:data:`RECHECK_INTERVAL`) whatever the watch says. Without a watch (no inotify on
this system, its limits reached, or outside a running service) every request looks, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from inotify_simple import Event, INotify, flags

log = logging.getLogger(__name__)

RECHECK_INTERVAL = 1.0  # seconds: changes inotify cannot see (NFS) are taken within this
_MASK = (
    flags.MODIFY
    | flags.ATTRIB
    | flags.CLOSE_WRITE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CREATE
    | flags.DELETE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
)
# Events on a directory's entry that change nothing but its content or status: they matter
# only for the watched files' own names.
_CONTENT_ONLY = flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE
_FILE_MASK = flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE | flags.DELETE_SELF | flags.MOVE_SELF


def watched_directories(paths: Sequence[Path]) -> list[str]:
    """The directories of ``paths`` and of their symbolic links' targets, once each."""
    directories: dict[str, None] = {}
    for path in paths:
        directories[os.path.abspath(path.parent)] = None
        directories[os.path.dirname(os.path.realpath(path))] = None
    return list(directories)


def _names(paths: Sequence[Path]) -> frozenset[str]:
    """The names the files have in the watched directories: theirs and their targets'."""
    return frozenset(
        name for path in paths for name in (path.name, os.path.basename(os.path.realpath(path)))
    )


class FileChanges:
    """``possibly_changed`` is True until :meth:`start` has a watch, and after any event
    in the watched directories or a recheck interval, until :meth:`taken` is called."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.directories = watched_directories(paths)
        self.paths = list(paths)
        self._names = _names(self.paths)
        self._what = "the status of " + ", ".join(str(path) for path in paths) + " is"
        self.possibly_changed = True
        self._inotify: INotify | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def watching(self) -> bool:
        return self._inotify is not None

    def taken(self) -> None:
        """The files are being looked at now: later events mark them again."""
        if self._inotify is not None:
            self.possibly_changed = False

    def start(self) -> None:
        """Watch the directories from the running event loop; on any failure, keep
        looking at the files on every login (logged once)."""
        loop = asyncio.get_running_loop()
        try:
            inotify = INotify(nonblocking=True)
        except OSError as error:
            log.warning("no inotify (%s): %s read on every request", error, self._what)
            return
        try:
            for directory in self.directories:
                inotify.add_watch(directory, _MASK)
            self._watch_files(inotify)
            loop.add_reader(inotify.fileno(), self._events)
        except (OSError, NotImplementedError) as error:
            inotify.close()
            log.warning(
                "users files: cannot watch (%s): their status is read on every login", error
            )
            return
        self._inotify, self._loop = inotify, loop
        self._recheck = loop.call_later(RECHECK_INTERVAL, self._expire)

    def stop(self) -> None:
        inotify, self._inotify = self._inotify, None
        self.possibly_changed = True
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(inotify.fileno())
            inotify.close()

    def _events(self) -> None:
        assert self._inotify is not None  # the reader is removed before the watch closes
        events = []
        with contextlib.suppress(BlockingIOError):
            events = self._inotify.read(timeout=0)
        if events and all(self._unrelated(event) for event in events):
            return  # another file's content (a log beside the configuration)
        self.possibly_changed = True
        self._watch_files(self._inotify)  # a file replaced meanwhile is a new inode

    def _unrelated(self, event: Event) -> bool:
        """Whether ``event`` is a write to, or a status change of, a directory entry that
        is none of the files (an event on a file's own watch has no name)."""
        return (
            bool(event.name) and not event.mask & ~_CONTENT_ONLY and event.name not in self._names
        )

    def _watch_files(self, inotify: INotify) -> None:
        """Watch each file's inode (again: adding a watch twice only renews it)."""
        self._names = _names(self.paths)  # a swapped symbolic link may name another target
        for path in self.paths:
            with contextlib.suppress(OSError):  # missing for now: its directory is watched
                inotify.add_watch(os.path.realpath(path), _FILE_MASK)

    def _expire(self) -> None:
        self.possibly_changed = True
        assert self._loop is not None
        self._recheck = self._loop.call_later(RECHECK_INTERVAL, self._expire)
