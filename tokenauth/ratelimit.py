"""Failed-login rate limiting: a token bucket per account and per client network.

Each key may fail ``capacity`` times in a burst; the bucket refills at ``capacity`` per
``window``. While a key's bucket is empty every login for it is answered 429 without even
checking the password, so guessing is capped at ``capacity`` per ``window`` per account
and per client. IPv6 clients are keyed by their /64, which one host can freely roam.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from datetime import timedelta


class FailureLimiter:
    """Token buckets of failed attempts, bounded to ``max_keys`` entries."""

    def __init__(
        self,
        capacity: int,
        window: timedelta,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window.total_seconds()  # tokens regained per second
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again; 0 if it may try now."""
        tokens = self._tokens(key, self.clock())
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def record_failure(self, key: str) -> None:
        now = self.clock()
        tokens = max(0.0, self._tokens(key, now) - 1)
        self._buckets.pop(key, None)  # re-insert: dict order is least recently failed first
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._evict(now)

    def reset(self, key: str) -> None:
        self._buckets.pop(key, None)

    def _evict(self, now: float) -> None:
        """Forget full buckets; if still too many, the least recently failed ones.

        Evicting down to 90% keeps the full scan rare under a flood of new keys.
        """
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.capacity]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys * 9 // 10:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(ip: str | None) -> str:
    """The rate-limit key of a client address: the address, or its /64 for IPv6."""
    if not ip:
        return "ip:unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"ip:{ip[:64]}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"
