"""What the soak's clients saw: every request's outcome and every operation's latency.

An *attempt* is one HTTP request; its outcome is its status or, when no answer came, the
kind of connection error. A *retryable* outcome (a reset or refused connection, nginx's
502/503/504) is what a real client retries; anything else the client did not expect is a
*hard error*, which fails the soak. An *operation* (log in, push a blob, put or get a
manifest, pull a blob, a whole image push or pull) is timed from its first attempt to its
last, retries included: the latency a user would see.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RETRYABLE_STATUSES = frozenset({502, 503, 504})


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class Recorder:
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    attempts: int = 0
    retryable: Counter[str] = field(default_factory=Counter)
    hard_errors: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)  # operations out of retries
    latencies: dict[str, list[float]] = field(default_factory=dict)
    bytes_pushed: int = 0
    bytes_pulled: int = 0
    pushes: int = 0  # images whose manifest PUT got 201
    pulls: int = 0  # images pulled and verified whole

    def attempt(self) -> None:
        self.attempts += 1

    def retry(self, kind: str) -> None:
        self.retryable[kind] += 1

    def hard(self, message: str) -> None:
        self.hard_errors.append(message)

    def timed(self, operation: str, seconds: float) -> None:
        self.latencies.setdefault(operation, []).append(seconds)

    def stop(self) -> None:
        self.finished = time.monotonic()

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def error_rate(self) -> float:
        """Retryable errors per attempt (hard errors are reported apart: any fails)."""
        return sum(self.retryable.values()) / self.attempts if self.attempts else 0.0

    def summary(self) -> dict[str, Any]:
        seconds = self.seconds
        return {
            "seconds": round(seconds, 1),
            "attempts": self.attempts,
            "retryable_errors": dict(self.retryable),
            "error_rate": self.error_rate,
            "hard_errors": self.hard_errors[:50],
            "hard_error_count": len(self.hard_errors),
            "gave_up": self.gave_up[:50],
            "gave_up_count": len(self.gave_up),
            "pushes": self.pushes,
            "pulls": self.pulls,
            "pushes_per_second": self.pushes / seconds,
            "pulls_per_second": self.pulls / seconds,
            "mb_per_second": (self.bytes_pushed + self.bytes_pulled) / seconds / 1e6,
            "latency_ms": {
                operation: {
                    "count": len(values),
                    "p50": 1000 * statistics.median(values),
                    "p99": 1000 * percentile(values, 0.99),
                }
                for operation, values in sorted(self.latencies.items())
            },
        }
