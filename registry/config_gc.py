"""Configuration of online garbage collection (``storage.gc``): how often the serving
registry collects, at what priority, and how long an unreferenced blob is spared
(docs/online-gc.md).

portside's own section (Distribution has none; zot calls these ``gcInterval`` and
``gcDelay``), in Distribution's lower-case style.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from shared.config import InvalidSetting, meta

PRIORITIES = ("idle", "low")


def _priority(value: str) -> str:
    if value not in PRIORITIES:
        raise ValueError("expected one of " + ", ".join(PRIORITIES))
    return value


def _not_negative(value: datetime.timedelta) -> datetime.timedelta:
    if value < datetime.timedelta(0):
        raise ValueError("must not be negative")
    return value


@dataclass(frozen=True)
class GarbageCollectionConfig:
    # How often the serving registry collects (first worker only, not in read-only
    # mode); 0: never (run ``registry garbage-collect`` instead, e.g. from cron).
    interval: datetime.timedelta = field(
        default=datetime.timedelta(0), metadata=meta(check=_not_negative)
    )
    # A blob no manifest references is deleted only once nothing has referenced it (an
    # upload, a HEAD, a mount, a manifest PUT) for this long; 0: Distribution's offline
    # collection, unsafe while anyone pushes. Also bounds a manifest PUT: half of it.
    graceperiod: datetime.timedelta = field(
        default=datetime.timedelta(hours=1), metadata=meta(check=_not_negative)
    )

    # The CPU and I/O priority of the scheduled collection's child and of
    # ``garbage-collect --low-priority`` (registry/gc_priority.py): ``idle`` takes only
    # time nothing else wants (SCHED_IDLE, I/O class idle), so a registry kept busy all
    # the time may collect slowly; ``low`` is nice 19, a small share even then.
    priority: str = field(default="idle", metadata=meta(check=_priority))

    def __post_init__(self) -> None:
        if self.interval and not self.graceperiod:
            raise InvalidSetting("graceperiod", "must be positive when interval is set")
