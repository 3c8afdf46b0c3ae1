"""One notification endpoint: a bounded queue of events and the task that POSTs them.

Events are sent one per envelope (``{"events": [event]}``), in the order they were
queued, as Distribution 2.8 does; a request never waits for delivery. A failed POST is
retried at once until ``threshold`` failures in a row, then every ``backoff`` until the
endpoint answers (Distribution's ``retryingSink``): an event is never skipped, so one
repository's events arrive in order. A full queue drops its oldest event, counted and
logged, so memory stays bounded while an endpoint is down for long.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from registry.config_notifications import EndpointConfig
from registry.notifications.events import EVENTS_MEDIA_TYPE, Event

log = logging.getLogger("registry.notifications")

# Statuses Distribution's httpSink counts as delivered (2xx, and 3xx left after redirects).
_DELIVERED = range(200, 400)


def _nothing() -> None:
    pass


@dataclass
class EndpointStats:
    """Counters of one endpoint in this process (for metrics)."""

    delivered: int = 0  # events the endpoint accepted
    failed: int = 0  # POSTs that failed (each retry counts)
    dropped: int = 0  # events discarded because the queue was full
    pending: int = 0  # events waiting now


class Endpoint:
    """Queues events for one ``notifications.endpoints`` entry and delivers them."""

    def __init__(self, config: EndpointConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.name = config.name
        self.stats = EndpointStats()
        # Told of each delivery, failed attempt and drop as it happens (the metrics, when
        # they are served: registry.notifications.notifier wires them).
        self.on_delivered: Callable[[], None] = _nothing
        self.on_failed: Callable[[], None] = _nothing
        self.on_dropped: Callable[[], None] = _nothing
        self._session = session
        self._queue: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ignored_types = config.ignored_media_types
        self._ignored_actions = frozenset(config.ignore.actions)
        self._headers = [
            ("Content-Type", EVENTS_MEDIA_TYPE),
            *((name, value) for name, values in config.headers.items() for value in values),
        ]

    def wants(self, event: Event) -> bool:
        """Whether the ignore rules let ``event`` through to this endpoint."""
        if event.get("action") in self._ignored_actions:
            return False
        return event.get("target", {}).get("mediaType") not in self._ignored_types

    def put(self, event: Event) -> None:
        """Queue ``event`` (the oldest waiting one goes if the queue is full)."""
        if len(self._queue) >= self.config.queuelimit:
            self._queue.popleft()
            self.stats.dropped += 1
            self.on_dropped()
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.warning(
                    "notification endpoint %s: queue full (%d events), dropped the oldest; "
                    "%d dropped so far",
                    self.name,
                    self.config.queuelimit,
                    self.stats.dropped,
                )
        self._queue.append(event)
        self.stats.pending = len(self._queue)
        self._ready.set()

    def restore(self, events: Iterable[Event]) -> None:
        """Queue events a previous process left undelivered, ahead of new ones."""
        for event in events:
            self.put(event)

    def pending(self) -> list[Event]:
        return list(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliver_forever(), name=f"notify-{self.name}")

    async def stop(self) -> None:
        """Stop delivering; what is still queued stays in :meth:`pending`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _deliver_forever(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            event = self._queue[0]
            if await self._send(event):
                if failures >= self.config.threshold:
                    log.warning("notification endpoint %s answers again", self.name)
                failures = 0
                # Still the head unless the queue overflowed meanwhile and dropped it (it
                # was on its way all the same: then it counts as dropped and delivered).
                if self._queue and self._queue[0] is event:
                    self._queue.popleft()
                self.stats.delivered += 1
                self.on_delivered()
                self.stats.pending = len(self._queue)
                continue
            failures += 1
            self.stats.failed += 1
            self.on_failed()
            if failures >= self.config.threshold:
                if failures == self.config.threshold:
                    log.warning(
                        "notification endpoint %s is failing; retrying every %gs",
                        self.name,
                        self.config.backoff.total_seconds(),
                    )
                await asyncio.sleep(self.config.backoff.total_seconds())
            else:
                await asyncio.sleep(0)  # retry at once, yet let requests run between tries

    async def _send(self, event: Event) -> bool:
        body = json.dumps({"events": [event]}, separators=(",", ":")).encode()
        timeout = self.config.timeout.total_seconds() or None
        try:
            async with self._session.post(
                self.config.url,
                data=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                # Redirects are followed, as Go's client does (307/308 POST the event again).
                max_redirects=10,
            ) as response:
                await response.read()
                if response.status in _DELIVERED:
                    return True
                log.info("notification endpoint %s answered %d", self.name, response.status)
                return False
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            # The URL is not logged: it may carry credentials.
            log.info("notification endpoint %s unreachable: %s", self.name, type(error).__name__)
            return False
        except Exception as error:  # the delivery task must outlive any failure
            log.warning("notification endpoint %s failed: %s", self.name, type(error).__name__)
            return False
