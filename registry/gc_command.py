"""``registry garbage-collect [--dry-run] [--delete-untagged] [--quiet] [--low-priority]
CONFIG``.

Distribution's command on Distribution's layout: the same flags (``-d``, ``-m``; ``-q``
as in Distribution 3), the same lines on standard output, then what was deleted and the
bytes freed. On a terminal, progress goes to standard error while it runs.

Blobs referenced within ``storage.gc.graceperiod`` (default 1h) are spared, so the
command is safe against a store registries are serving (docs/online-gc.md); set it to 0
(``REGISTRY_STORAGE_GC_GRACEPERIOD=0``) for Distribution's offline results on a quiet store.
``--low-priority`` runs it at the priority of the scheduled collection
(``storage.gc.priority``, by default idle CPU and I/O; ``registry/gc_priority.py``), for
a run beside registries serving from the same machine.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from registry.config import RegistryConfig
from registry.gc_priority import lower_priority
from registry.metrics import RegistryMetrics
from registry.storage.gc import IDLE_SWEEP_BATCH, SWEEP_BATCH, CollectionReport, GarbageCollector
from registry.wiring import create_blob_descriptor_cache, create_storage
from shared.metrics import multiprocess_dir

# Deleting processes of a collection on the filesystem: deletions in flight at once.
DELETING_PROCESSES = 8


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError("unreachable")


class _ProgressLine:
    """One self-overwriting line on a terminal, at most every tenth of a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self._shown_at = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.active or (now - self._shown_at < 0.1 and done != total):
            return
        self._shown_at = now
        count = f"{done}/{total}" if total else str(done)
        self.stream.write(f"\r\x1b[K{phase}: {count}")
        self.stream.flush()

    def clear(self) -> None:
        if self.active:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


async def collect(
    config: RegistryConfig,
    *,
    dry_run: bool,
    delete_untagged: bool,
    quiet: bool,
    low_priority: bool = False,
) -> CollectionReport:
    """One collection; ``low_priority``: the caller has lowered its priority to
    ``storage.gc.priority``, and the sweep checks its lease as often as that needs."""
    # Deleting processes share no interpreter lock with the collector's thread
    # (registry/storage/driver/filesystem_deleters.py). Not at low priority (the
    # scheduled collection, beside a serving registry): it deletes a few paths at a time
    # and must cost the registry no more than it did.
    registry = create_storage(config, deleting_processes=0 if low_priority else DELETING_PROCESSES)
    # Deleted blobs must also leave the cache the serving registries read.
    registry.blob_store.cache = create_blob_descriptor_cache(config)
    progress = _ProgressLine(sys.stderr)
    purging = config.storage.maintenance.uploadpurging
    collector = GarbageCollector(
        registry,
        dry_run=dry_run,
        delete_untagged=delete_untagged,
        # Abandoned uploads go as the purge would take them (storage.maintenance).
        upload_age=purging.age.total_seconds() if purging.enabled else None,
        grace=config.storage.gc.graceperiod.total_seconds(),
        emit=None if quiet else print,
        progress=progress,
        sweep_batch=(
            IDLE_SWEEP_BATCH
            if low_priority and config.storage.gc.priority == "idle"
            else SWEEP_BATCH
        ),
    )
    try:
        return await collector.run()
    finally:
        progress.clear()
        if registry.blob_store.cache is not None:
            await registry.blob_store.cache.close()
        await registry.close()


def garbage_collect(
    config: RegistryConfig,
    *,
    dry_run: bool,
    delete_untagged: bool,
    quiet: bool,
    low_priority: bool = False,
) -> int:
    if low_priority:
        lower_priority(config.storage.gc.priority)  # before asyncio.run starts threads
    started = time.monotonic()
    report = asyncio.run(
        collect(
            config,
            dry_run=dry_run,
            delete_untagged=delete_untagged,
            quiet=quiet,
            low_priority=low_priority,
        )
    )
    if not dry_run and config.http.debug.prometheus.enabled and multiprocess_dir():
        # A one-shot command has no scrape of its own: its samples reach the serving
        # registry's scrape through the multiprocess directory they share.
        RegistryMetrics().collected(report.bytes_freed, time.monotonic() - started)
    verb = "would delete" if dry_run else "deleted"
    freed = "would free" if dry_run else "freed"
    print(
        f"{verb} {len(report.blobs)} blobs, {len(report.manifests)} manifests and "
        f"{len(report.layer_links)} layer links in {report.repositories} repositories; "
        f"{freed} {human_size(report.bytes_freed)} ({report.bytes_freed} bytes) "
        f"in {time.monotonic() - started:.1f}s"
    )
    print(
        f"{verb} {report.uploads_purged} abandoned uploads, {report.temporaries} temporary "
        f"files of killed writers and {len(report.empty_repositories)} empty repositories"
        + (" (temporary files are not looked for in a dry run)" if dry_run else "")
    )
    if report.spared:
        grace = config.storage.gc.graceperiod
        print(
            f"kept {report.spared} unreferenced blobs referenced within the grace period "
            f"({grace}; storage.gc.graceperiod)"
        )
    return 0
