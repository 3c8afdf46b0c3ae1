"""Online garbage collection on a schedule (``storage.gc.interval``), for a serving
registry: every interval, ``registry garbage-collect``'s collection (with the grace
period, see docs/online-gc.md) runs in a child process at the lowest CPU priority.

A child, not a task on the serving loop: marking reads every manifest of the store, work
that would take turns with requests on the loop and hold the GIL in a thread. Niced,
the kernel gives it only the CPU the registry leaves idle (docs/performance.md has what
it costs manifest GETs). The serving process then forgets what was deleted from its own
in-memory caches (the child already dropped it from a shared Redis cache).

Every instance sharing a store may run its schedule: concurrent collectors are safe by
the same protocol as pushes, so none is elected; they only repeat each other's reading.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from registry.config import RegistryConfig
from registry.oci.digest import Digest
from registry.storage.gc_safety import CollectionBusy
from registry.storage.registry import Registry

log = logging.getLogger("registry.gc")

NICENESS = 19


@dataclass(frozen=True)
class Collected:
    """What a child's collection deleted, for the serving process's caches and log."""

    blobs: list[Digest]
    layer_links: list[tuple[str, Digest]]
    bytes_freed: int
    spared: int


def _collect_in_child(config: RegistryConfig) -> Collected:
    from registry.gc_command import collect  # imported in the child only

    report = asyncio.run(collect(config, dry_run=False, delete_untagged=False, quiet=True))
    return Collected(
        [digest for digest, _ in report.blobs],
        report.layer_links,
        report.bytes_freed,
        report.spared,
    )


def _lower_priority() -> None:
    os.nice(NICENESS)


async def collect_periodically(registry: Registry, config: RegistryConfig) -> None:
    """Collect every ``storage.gc.interval`` until cancelled; a failed run is logged and
    tried again at the next interval."""
    interval = config.storage.gc.interval.total_seconds()
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")  # never fork a running event loop
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=_lower_priority)
    try:
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            try:
                done = await loop.run_in_executor(pool, _collect_in_child, config)
            except CollectionBusy as error:  # e.g. it lost its lease: nothing at fault
                log.warning("garbage collection stopped: %s; will retry", error)
                continue
            except Exception:
                log.exception("garbage collection failed; will retry")
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
    finally:
        # Never block the loop: a run in progress finishes in its child (a killed one
        # would leave its record to expire), which the interpreter joins at exit.
        pool.shutdown(wait=False, cancel_futures=True)


async def _forget(registry: Registry, done: Collected) -> None:
    store = registry.blob_store
    for digest in done.blobs:
        await store.forget(digest)
        if store.guard.memo is not None:
            store.guard.memo.forget(digest)
    for name, digest in done.layer_links:
        await registry.repository(name).blobs.forget(digest)
