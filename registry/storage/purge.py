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

from registry.storage import paths
from registry.storage.catalog import repository_names
from registry.storage.driver.base import PathNotFound, StorageDriver

log = logging.getLogger("registry.purge")


async def purge_uploads(driver: StorageDriver, older_than: float, dry_run: bool = False) -> int:
    """Delete uploads started more than ``older_than`` seconds ago; return how many."""
    deadline = time.time() - older_than
    purged = 0
    async for name in repository_names(driver, (paths.UPLOADS,)):
        try:
            upload_ids = await driver.list_dir(paths.uploads_dir(name))
        except PathNotFound:
            continue
        for upload_id in sorted(upload_ids):
            started = await _started_at(driver, name, upload_id)
            if started is None or started >= deadline:
                continue
            purged += 1
            if dry_run:
                log.info("would purge upload %s of %s", upload_id, name)
                continue
            try:
                await driver.delete(paths.upload_dir(name, upload_id))
            except PathNotFound:
                continue
    return purged


async def _started_at(driver: StorageDriver, name: str, upload_id: str) -> float | None:
    try:
        return float((await driver.get_content(paths.upload_started_at(name, upload_id))).decode())
    except (PathNotFound, ValueError):
        pass
    try:  # no readable start time: judge by the data file's age
        return (await driver.stat(paths.upload_data(name, upload_id))).modified
    except PathNotFound:
        pass
    try:  # no data either (a start cut short after its start time's file was made)
        return (await driver.stat(paths.upload_started_at(name, upload_id))).modified
    except PathNotFound:
        pass
    try:  # nor that file (cut short after the upload's directory was made): its age
        directory = await driver.stat(paths.upload_dir(name, upload_id))
    except PathNotFound:
        return None
    # A store of objects has no directories of its own, nor their times (0 for unknown):
    # an upload there is never judged by nothing.
    return directory.modified or None


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
