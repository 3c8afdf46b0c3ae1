"""Events not yet delivered, kept on local disk across a clean restart.

At shutdown each endpoint's queue is written to ``<directory>/<endpoint>.<worker>.jsonl``
(one event per line, written to a temporary file and renamed into place, so a crash while
writing leaves the previous file or none); at start-up the files of this endpoint and
worker index are read, their events queued ahead of new ones, and removed. Keyed by
worker index, a worker that replaces another picks up what its predecessor left; files
of indexes past the current number of workers (after a restart with fewer) go to worker
``index % workers``. Writing only at
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
    """The files of undelivered events in ``directory`` of worker ``worker`` of ``workers``."""

    def __init__(self, directory: Path, worker: int, workers: int = 1) -> None:
        self.directory = directory
        self.worker = worker
        self.workers = max(workers, 1)

    def path(self, endpoint: str, worker: int | None = None) -> Path:
        # Names are the operator's; a path separator in one must not leave the directory.
        index = self.worker if worker is None else worker
        return self.directory / f"{_UNSAFE.sub('_', endpoint)}.{index}.jsonl"

    def _mine(self, endpoint: str) -> list[Path]:
        """This worker's files for ``endpoint``: its own index first, then any orphans."""
        prefix = _UNSAFE.sub("_", endpoint) + "."
        indexes = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        for name in names:
            index = name[len(prefix) : -len(".jsonl")]
            ours = name.startswith(prefix) and name.endswith(".jsonl") and index.isdigit()
            if ours and int(index) % self.workers == self.worker:
                indexes.append(int(index))
        return [self.path(endpoint, index) for index in sorted(indexes)]

    def take(self, endpoint: str, limit: int) -> list[Event]:
        """The events saved for ``endpoint`` (the newest ``limit``), removing the files."""
        events: list[Event] = []
        for path in self._mine(endpoint):
            try:
                lines = path.read_bytes().splitlines()
            except OSError as error:
                log.error("cannot read saved notifications %s: %s", path, error.strerror)
                continue
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a damaged line loses its event, not the others
                if isinstance(event, dict):
                    events.append(event)
            path.unlink(missing_ok=True)
        if events:
            log.info("notification endpoint %s: resending %d saved events", endpoint, len(events))
        return events[-limit:]

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
