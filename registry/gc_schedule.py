"""Online garbage collection on a schedule (``storage.gc.interval``), for a serving
registry: every interval, ``registry garbage-collect``'s collection (with the grace
period, see docs/online-gc.md) runs in a child process at idle CPU and I/O priority
(``storage.gc.priority``, ``registry/gc_priority.py``).

A child, not a task on the serving loop: marking reads every manifest of the store, work
that would take turns with requests on the loop and hold the GIL in a thread. At idle
priority (``SCHED_IDLE``, the default), the kernel gives it only the CPU the registry and
everything else leave idle (docs/performance.md has what it costs manifest GETs, and how
much longer a collection takes under load). The serving process then forgets what was
deleted from its own in-memory caches (the child already dropped it from a shared Redis
cache).

The child lives no longer than its registry. A clean stop (SIGTERM/SIGINT, the app's
clean-up) terminates a run in progress, then kills it if it is still there after
``STOP_WAIT``: it is never waited for until its run ends. A registry that is killed
(SIGKILL, the OOM killer) takes its child with it: the child asks the kernel for SIGKILL
when its parent dies (Linux ``PR_SET_PDEATHSIG``). A stopped run is harmless: its
condemned record stops holding pushes once its lease stops moving (8 s), and it deleted
nothing it had not condemned.

Every instance sharing a store may run its schedule: concurrent collectors are safe by
the same protocol as pushes, so none is elected; they only repeat each other's reading.
With ``--workers N`` only the first worker collects (it runs the maintenance), and the
child is that worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from registry.config import RegistryConfig
from registry.gc_priority import lower_priority
from registry.oci.digest import Digest
from registry.storage.gc_safety import CollectionBusy
from registry.storage.registry import Registry
from shared import cpu_affinity
from shared.parent_death import die_with_parent

log = logging.getLogger("registry.gc")

STOP_WAIT = 2.0  # seconds a terminated child has to exit before it is killed

# Never fork a running event loop (and its threads): the child starts a new interpreter.
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Collected:
    """What a child's collection deleted, for the serving process's caches and log."""

    blobs: list[Digest]
    layer_links: list[tuple[str, Digest]]
    bytes_freed: int
    spared: int


@dataclass(frozen=True)
class _Failed:
    """A run that raised: whether it only lost a race (``busy``), and what to log."""

    busy: bool
    text: str


class CollectionFailed(Exception):
    """A run ended without a result: it raised, or its child died."""


async def collect_periodically(registry: Registry, config: RegistryConfig) -> None:
    """Collect every ``storage.gc.interval`` until cancelled; a failed run is logged and
    tried again at the next interval."""
    interval = config.storage.gc.interval.total_seconds()
    while True:
        await asyncio.sleep(interval)
        started = time.monotonic()
        try:
            done = await collect_in_child(config)
        except CollectionBusy as error:  # e.g. it lost its lease: nothing at fault
            log.warning("garbage collection stopped: %s; will retry", error)
            continue
        except CollectionFailed as error:
            log.error("garbage collection failed; will retry: %s", error)
            continue
        await _forget(registry, done)
        if done.blobs or done.layer_links:
            log.info(
                "garbage collection deleted %d blobs (%d bytes) and %d layer links in "
                "%.1fs; %d unreferenced blobs are younger than the grace period",
                len(done.blobs),
                done.bytes_freed,
                len(done.layer_links),
                time.monotonic() - started,
                done.spared,
            )


async def collect_in_child(config: RegistryConfig) -> Collected:
    """One collection in a new child process, stopped with it if this task is cancelled.

    A process per run rather than a pool: a pool's worker that dies (the OOM killer)
    breaks the pool for good, a pool gives no public way to stop a call in progress, and
    the memory a run's marking took goes back to the system with its process.
    """
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(
        target=_run_child,
        args=(config, sender, os.getpid()),
        name="registry-gc",
        daemon=True,  # also terminated by multiprocessing's exit hook
    )
    # Started from the event loop's thread, which lives as long as the process: the
    # kernel sends PR_SET_PDEATHSIG when the *thread* that created the child exits (the
    # reason not to let a pool's manager thread start it).
    with cpu_affinity.children_unbound():  # at idle priority it needs a CPU of its own
        child.start()
    sender.close()  # the child holds the only writing end: EOF once it is gone
    outcome: Collected | _Failed | None = None
    try:
        await _readable(receiver.fileno())
        # The answer is being written once readable: recv() waits at most for the rest.
        with contextlib.suppress(EOFError):  # no answer: the child died (see below)
            outcome = receiver.recv()
    finally:
        receiver.close()
        code = await _stop(child)
    if outcome is None:
        ended = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        raise CollectionFailed(f"its process {ended}")
    if isinstance(outcome, _Failed):
        if outcome.busy:
            raise CollectionBusy(outcome.text)
        raise CollectionFailed(outcome.text)
    assert isinstance(outcome, Collected)
    return outcome


async def _stop(child: BaseProcess) -> int:
    """Terminate ``child``, kill it if it is still there after STOP_WAIT, and reap it;
    its exit code (``-N``: killed by signal N)."""
    if child.exitcode is None:
        child.terminate()
        try:
            await asyncio.wait_for(_exited(child), STOP_WAIT)
        except TimeoutError:
            child.kill()
            await _exited(child)
    child.join()  # reaps it: it has exited by now
    code = child.exitcode
    child.close()
    assert code is not None
    return code


async def _exited(child: BaseProcess) -> None:
    await _readable(child.sentinel)


async def _readable(fd: int) -> None:
    """Wait, without blocking the loop, until ``fd`` is readable (data, or EOF)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _run_child(config: RegistryConfig, answer: Connection, parent: int) -> None:
    """The child's whole life: die with ``parent``, lower its priority, collect, answer."""
    die_with_parent(parent)
    # A terminal's Ctrl-C reaches the whole process group: the registry decides when its
    # child stops (SIGTERM), and a KeyboardInterrupt here would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority(config.storage.gc.priority)  # before any thread: each inherits it
    from registry.gc_command import collect  # imported in the child only

    outcome: Collected | _Failed
    try:
        report = asyncio.run(
            collect(config, dry_run=False, delete_untagged=False, quiet=True, low_priority=True)
        )
        outcome = Collected(
            [digest for digest, _ in report.blobs],
            report.layer_links,
            report.bytes_freed,
            report.spared,
        )
    except CollectionBusy as error:
        outcome = _Failed(True, str(error))
    except Exception:
        outcome = _Failed(False, traceback.format_exc())
    answer.send(outcome)
    answer.close()


# Deleted blobs and links forgotten between two turns of the serving loop: an in-memory
# cache's forget never waits, so 36,000 at once (scenario 6) would hold every request
# of the serving loop until the last.
FORGET_TURN = 256


async def _forget(registry: Registry, done: Collected) -> None:
    store = registry.blob_store
    for index, digest in enumerate(done.blobs, 1):
        await store.forget(digest)
        if store.guard.memo is not None:
            store.guard.memo.forget(digest)
        if index % FORGET_TURN == 0:
            await asyncio.sleep(0)
    for index, (name, digest) in enumerate(done.layer_links, 1):
        await registry.repository(name).blobs.forget(digest)
        if index % FORGET_TURN == 0:
            await asyncio.sleep(0)
