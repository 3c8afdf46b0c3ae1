"""Events not yet delivered, kept on local disk across a clean restart.

At shutdown each endpoint's queue is written to ``<directory>/<endpoint>.<worker>.jsonl``
(one event per line, written to a temporary file and renamed into place, so a crash while
writing leaves the previous file or none); at start-up the file of this endpoint and
worker index is read, its events queued ahead of new ones, and removed. Keyed by worker
index, a worker that replaces another picks up what its predecessor left. Writing only at
shutdown keeps disk I/O off the request path; a process that is killed loses what it had
queued (``docs/operations.md#notifications``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from registry.notifications.events import Event

log = logging.getLogger("registry.notifications")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class Spool:
    """The files of one worker's undelivered events in ``directory``."""

    def __init__(self, directory: Path, worker: int) -> None:
        self.directory = directory
        self.worker = worker

    def path(self, endpoint: str) -> Path:
        # Names are the operator's; a path separator in one must not leave the directory.
        return self.directory / f"{_UNSAFE.sub('_', endpoint)}.{self.worker}.jsonl"

    def take(self, endpoint: str, limit: int) -> list[Event]:
        """The events saved for ``endpoint`` (the newest ``limit``), removing the file."""
        path = self.path(endpoint)
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as error:
            log.error("cannot read saved notifications %s: %s", path, error.strerror)
            return []
        events: list[Event] = []
        for line in lines[-limit:]:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a damaged line loses its event, not the others
            if isinstance(event, dict):
                events.append(event)
        path.unlink(missing_ok=True)
        if events:
            log.info("notification endpoint %s: resending %d saved events", endpoint, len(events))
        return events

    def save(self, endpoint: str, events: list[Event]) -> None:
        """Keep ``events`` for the next start (none: nothing is written)."""
        if not events:
            return
        path = self.path(endpoint)
        temporary = path.with_name(path.name + ".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                for event in events:
                    file.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            log.error(
                "notification endpoint %s: cannot save %d undelivered events to %s: %s",
                endpoint,
                len(events),
                path,
                error.strerror,
            )
            return
        log.info("notification endpoint %s: saved %d undelivered events", endpoint, len(events))
