"""Upload purging (``storage.maintenance.uploadpurging``): delete abandoned uploads.

A client that starts an upload and goes away leaves its data in ``_uploads/``; like
Distribution, every ``interval`` the registry removes uploads older than ``age``. Each run
(and start-up, see ``remove_leftovers``) also removes the temporary files of writers that
were killed before renaming them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver

log = logging.getLogger("registry.purge")


async def purge_uploads(driver: StorageDriver, older_than: float, dry_run: bool = False) -> int:
    """Delete uploads started more than ``older_than`` seconds ago; return how many."""
    deadline = time.time() - older_than
    purged = 0
    async for upload_dir in _upload_dirs(driver, paths.REPOSITORIES):
        started = await _started_at(driver, upload_dir)
        if started is None or started >= deadline:
            continue
        purged += 1
        if dry_run:
            log.info("would purge upload %s", upload_dir)
            continue
        try:
            await driver.delete(upload_dir)
        except PathNotFound:
            continue
    return purged


async def _upload_dirs(driver: StorageDriver, directory: str) -> AsyncIterator[str]:
    try:
        children = await driver.list_dir(directory)
    except PathNotFound:
        return
    for child in sorted(children):
        if child == "_uploads":
            try:
                uploads = await driver.list_dir(f"{directory}/_uploads")
            except PathNotFound:
                continue
            for upload_id in uploads:
                yield f"{directory}/_uploads/{upload_id}"
        elif not child.startswith("_"):
            async for found in _upload_dirs(driver, f"{directory}/{child}"):
                yield found


async def _started_at(driver: StorageDriver, upload_dir: str) -> float | None:
    try:
        return float((await driver.get_content(f"{upload_dir}/startedat")).decode())
    except (PathNotFound, ValueError):
        pass
    try:  # no readable start time: judge by the data file's age
        return (await driver.stat(f"{upload_dir}/data")).modified
    except PathNotFound:
        return None


async def remove_leftovers(driver: StorageDriver) -> None:
    """Remove killed writers' temporaries; log, never raise (it is housekeeping)."""
    try:
        removed = await driver.remove_leftovers()
    except Exception:
        log.exception("removing leftover temporary files failed; will retry")
        return
    if removed:
        log.info("removed %d temporary files left by killed writers", removed)


async def purge_periodically(
    driver: StorageDriver, age: float, interval: float, dry_run: bool
) -> None:
    """Purge now and then every ``interval`` seconds, until cancelled."""
    while True:
        if not dry_run:
            await remove_leftovers(driver)
        try:
            purged = await purge_uploads(driver, age, dry_run)
            if purged:
                log.info("purged %d abandoned uploads older than %.0fs", purged, age)
        except Exception:
            log.exception("upload purging failed; will retry")
        await asyncio.sleep(max(interval, 1.0))
