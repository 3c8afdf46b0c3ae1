"""Pull times of tags, recorded cheaply for retention's ``keeppulledwithin`` rule.

A pull only notes the time in memory (no storage access on the request path); a
background task of the serving registry flushes the notes every minute and on shutdown,
writing a tag's ``pulled`` file only when the time stored there is older than the
resolution. A tag pulled all day long therefore costs one small write per resolution
(an hour by default), whatever the request rate, and one read per tag per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from registry.storage.driver.base import DriverError
from registry.storage.tags import Tags

log = logging.getLogger("registry.pulls")

FLUSH_INTERVAL = 60.0  # seconds between flushes of the serving registry
# Tags with a pull noted but not yet flushed, and stored times remembered: a pull is only
# noted for a tag that exists, so these bound memory by the store's size, and beyond
# them by these numbers (a pull noted while the pending map is full is recorded by a
# later pull of the same tag after the next flush).
MAX_PENDING = 100_000
MAX_REMEMBERED = 100_000


class PullRecorder:
    """Notes ``(repository, tag)`` pulls in memory; ``flush`` writes those that are due."""

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._pending: dict[tuple[str, str], float] = {}
        self._stored: OrderedDict[tuple[str, str], float] = OrderedDict()

    def note(self, name: str, tag: str, when: float | None = None) -> None:
        """Record that ``tag`` of ``name`` was pulled now (or at ``when``); never blocks."""
        when = time.time() if when is None else when
        key = (name, tag)
        stored = self._stored.get(key)
        if stored is not None and when - stored < self.resolution:
            return
        if key in self._pending or len(self._pending) < MAX_PENDING:
            self._pending[key] = max(when, self._pending.get(key, when))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, tags_of: Callable[[str], Tags]) -> int:
        """Write the pull times that are due; how many were written. A failed write is
        logged and that note dropped (the next pull of the tag notes it again)."""
        pending, self._pending = self._pending, {}
        written = 0
        for key, when in sorted(pending.items()):
            name, tag = key
            tags = tags_of(name)
            try:
                stored = self._stored.get(key)
                if stored is None:  # another process, or an earlier run, may have written
                    stored = await tags.pulled_at(tag)
                if stored is not None and when - stored < self.resolution:
                    self._remember(key, stored)
                    continue
                if await tags.record_pull(tag, when):
                    self._remember(key, when)
                    written += 1
                else:
                    self._stored.pop(key, None)
            except (OSError, DriverError) as error:
                log.warning("recording the pull time of %s:%s failed: %s", name, tag, error)
        return written

    def _remember(self, key: tuple[str, str], when: float) -> None:
        self._stored[key] = when
        self._stored.move_to_end(key)
        while len(self._stored) > MAX_REMEMBERED:
            self._stored.popitem(last=False)


async def flush_periodically(
    recorder: PullRecorder, tags_of: Callable[[str], Tags], interval: float = FLUSH_INTERVAL
) -> None:
    """Flush every ``interval`` seconds until cancelled; the caller flushes once more
    after cancelling, so pulls noted just before shutdown are kept."""
    while True:
        await asyncio.sleep(interval)
        try:
            await recorder.flush(tags_of)
        except Exception:
            log.exception("flushing pull times failed; will retry")
