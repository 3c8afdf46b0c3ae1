"""Deleting children for a collection on the filesystem driver: ``delete_many``'s runs
handed to a few processes of their own instead of the driver's threads.

Why processes: every ``unlink`` and ``rmdir`` releases the interpreter lock and takes it
back, so the driver's deleting threads and the collector's own thread handed the lock to
each other after each call: ``strace -c -f`` of a collection of the bench's store counted
1.6 million ``futex`` calls for 80,000 ``unlinkat`` (905,000 with 4 threads), and
``perf`` put a quarter of the run's CPU in them. A child deletes on one thread of its
own, so it never waits for a lock, and the collector's thread keeps its core. Several
children keep several deletions in flight, which a disk that discards each freed block
needs (see ``FilesystemDriver.delete_many``).

Each child is ``filesystem_delete.py`` run as a program (``python -I -S``, standard
library only: ``child_program``): it dies with its parent (``die_with_parent``), refuses
any path outside the root, and ends when its standard input closes. A child that dies
or answers nonsense is dropped and its runs are deleted in the caller's threads instead:
deletions are idempotent, so nothing is lost but the sizes of what the child had already removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from registry.storage.driver import child_program, filesystem_delete

log = logging.getLogger("registry.storage.deleters")
_PROGRAM = os.path.abspath(filesystem_delete.__file__)
# Fewest paths of one request to a child: each costs a round trip through two pipes and
# the event loop (about 0.3 ms of the collector's CPU), so a collection's sweep pieces
# (64 paths) go whole; its concurrent pieces keep the children busy.
CHILD_MIN_BATCH = 64
# The longest reply line read from a child: a size (or null) and a comma per path.
REPLY_LIMIT = 64 * 1024 * 1024


class DeletionRefused(ValueError):
    """A child refused a path outside the driver's root (a bug of the caller's)."""


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    alive: bool = True


class DeletingChildren:
    """``count`` deleting children of ``root``, started at the first run; ``close``
    ends them."""

    def __init__(self, root: str, count: int) -> None:
        self.root = root
        self.count = count
        self._children: list[_Child] | None = None
        self._starting = asyncio.Lock()
        self._turn = itertools.count()

    async def _started(self) -> list[_Child]:
        async with self._starting:
            if self._children is None:
                self._children = [c for c in [await self._start() for _ in range(self.count)] if c]
            return self._children

    async def _start(self) -> _Child | None:
        try:
            process = await asyncio.create_subprocess_exec(
                *child_program.command(_PROGRAM, self.root, str(os.getpid())),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # A reply is one line for a whole run, and a run keeps one directory's
                # paths together however many there are: not asyncio's 64 KiB per line.
                limit=REPLY_LIMIT,
            )
        except OSError as error:  # no process to be had (a pids limit, no memory)
            log.warning("a deleting child could not start: %s", error)
            return None
        return _Child(process)

    async def deleted_all(
        self, full: Sequence[str], sole_file: str | None
    ) -> list[int | None] | None:
        """``filesystem_delete.deleted_all`` of ``full`` in a child; None when no child
        could do it (none started, or it died): the caller deletes them itself."""
        children = await self._started()
        if not children:
            return None
        child = children[next(self._turn) % len(children)]
        async with child.lock:
            if not child.alive:
                return None
            process = child.process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps([sole_file, list(full)]).encode() + b"\n")
                await process.stdin.drain()
                reply = json.loads(await process.stdout.readline())
            except (OSError, ValueError) as error:  # died (EOF, a broken pipe) or garbled
                await self._drop(child, error)
                return None
            except BaseException:  # cancelled mid-request: its reply would answer the next
                await self._drop(child, None)
                raise
        if isinstance(reply, dict):
            raise DeletionRefused(f"a deleting child refused {reply.get('refused')!r}")
        if not isinstance(reply, list) or len(reply) != len(full):
            await self._drop(child, ValueError(f"a reply of {type(reply).__name__}"))
            return None
        return reply

    async def _drop(self, child: _Child, error: Exception | None) -> None:
        child.alive = False
        if error is not None:
            log.warning("a deleting child failed (%s); its runs go to threads", error)
        await asyncio.shield(_ended(child.process, kill=True))

    async def close(self) -> None:
        children, self._children = self._children or [], None
        # Ended together: each finishes its interpreter on its own, where one after the
        # other the collection's end waited for eight exits in turn.
        await asyncio.gather(*(_ended(child.process, kill=not child.alive) for child in children))


async def _ended(process: asyncio.subprocess.Process, *, kill: bool) -> None:
    """End a child: its input closed (it finishes its request and exits), or killed."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    elif process.stdin is not None:
        process.stdin.close()
    await process.wait()
