"""What a push's checks against online garbage collection cost on the event loop, kept
from coming back. Counted, not timed: the machine is shared."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

from registry.oci.digest import parse_digest
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.gc_safety import BlobGuard

DIGEST = parse_digest("sha256:" + "cd" * 32)


async def test_securing_one_blob_starts_no_task_per_worker(tmp_path: Path) -> None:
    """A push's commit secures the one digest of its blob: the refresh and the storage
    check used to start 16 worker tasks each for it, about 6% of a push's time on the
    loop. One digest now takes no task at all."""
    driver = FilesystemDriver(tmp_path, fsync=False)
    guard = BlobGuard(driver, grace=3600.0)  # online: the protocol's reads and writes run
    loop = asyncio.get_running_loop()
    started = 0
    default = loop.get_task_factory()

    def counting(
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        nonlocal started
        started += 1
        if default is not None:
            return default(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        secured = await guard.secure([DIGEST])
    finally:
        loop.set_task_factory(default)
        await driver.close()
    assert secured.missing == {DIGEST}  # nothing stored: found missing, as a new blob is
    assert started == 0
