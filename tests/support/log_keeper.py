"""A logging handler that keeps the records it is handed, unformatted, as the log
writer's queue does: tests read the access lines' fields from them."""

from __future__ import annotations

import logging


class Keeper(logging.Handler):
    """Keeps the records it is handed, unformatted."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
