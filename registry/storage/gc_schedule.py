"""Online garbage collection on a schedule (``storage.gc.interval``), inside a serving
registry: the collector of ``gc`` with the grace period of ``gc_safety``.

Every instance sharing a store may run its schedule: concurrent collectors are safe by
the same protocol as pushes (each condemns, re-reads and deletes only what it condemned),
so none is elected; they only repeat each other's reading (docs/online-gc.md).
"""

from __future__ import annotations

import asyncio
import logging
import time

from registry.storage.gc import GarbageCollector
from registry.storage.registry import Registry

log = logging.getLogger("registry.gc")


async def collect_periodically(registry: Registry, grace: float, interval: float) -> None:
    """Collect every ``interval`` seconds, sparing blobs referenced within ``grace``
    seconds, until cancelled; a failed run is logged and tried again next time."""
    if grace <= 0:
        raise ValueError("online collection needs a positive grace period")
    while True:
        await asyncio.sleep(interval)
        started = time.monotonic()
        try:
            report = await GarbageCollector(registry, grace=grace).run()
        except Exception:
            log.exception("garbage collection failed; will retry")
            continue
        if report.blobs or report.layer_links:
            log.info(
                "garbage collection deleted %d blobs (%d bytes) and %d layer links in "
                "%.1fs; %d unreferenced blobs are younger than the grace period",
                len(report.blobs),
                report.bytes_freed,
                len(report.layer_links),
                time.monotonic() - started,
                report.spared,
            )
