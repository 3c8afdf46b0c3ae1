"""Login limiting shared by tokenauth and the registry's htpasswd mode.

:class:`FailureLimiter` is a token bucket per key: each key may fail ``capacity`` times in
a burst and regains ``capacity`` attempts per ``window``. :class:`LoginLimits` pairs a
bucket per account with one per client network (IPv6 by /64, which one host can freely
roam) and hands out :class:`Attempt` reservations.

An attempt takes its place in every bucket *before* the password is checked and gives it
back only when the login succeeds (or is never checked), so no number of concurrent
requests can get more than ``capacity`` wrong passwords checked per key: the check and the
charge happen together, with no ``await`` between them. A place is taken per password
check, not per request: requests that join a check already running for the same user and
password (``shared.credentials``) guess nothing new and take none, so a client sending the
right password in many parallel requests is not refused.

The buckets live in this process (:class:`LocalBuckets`, the default) or, for replicas
behind a load balancer, in Redis (``shared.ratelimit_redis``), where one script checks and
takes atomically, so N replicas share one budget instead of having N.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from shared.config import InvalidSetting, meta
from shared.htpasswd import MAX_USERNAME_LENGTH


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must not be negative")
    return value


@dataclass(frozen=True)
class RateLimitConfig:
    """The ``ratelimit`` section of both services (tokenauth's top level, the registry's
    ``auth.htpasswd``): failures allowed per account and per address within ``window``,
    and how many password checks may run at once (0: twice the CPUs this process may use,
    at least 8; see ``shared.credentials.default_concurrent_checks``)."""

    enabled: bool = True
    accountfailures: int = field(default=5, metadata=meta(check=_positive))
    ipfailures: int = field(default=20, metadata=meta(check=_positive))
    window: timedelta = timedelta(minutes=5)
    concurrentchecks: int = field(default=0, metadata=meta(check=_not_negative))

    def __post_init__(self) -> None:
        if self.window < timedelta(seconds=1):
            raise InvalidSetting("window", "must be at least 1s")


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

    def take(self, key: str) -> None:
        """Spend one attempt of ``key`` (callers check :meth:`retry_after` first)."""
        now = self.clock()
        self._store(key, max(0.0, self._tokens(key, now) - 1), now)

    def give_back(self, key: str) -> None:
        """Return an attempt taken by :meth:`take` that turned out not to be a failure."""
        now = self.clock()
        tokens = min(self.capacity, self._tokens(key, now) + 1)
        if tokens >= self.capacity:
            self._buckets.pop(key, None)  # a full bucket is the same as no bucket
        else:
            self._store(key, tokens, now)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets.pop(key, None)  # re-insert: dict order is least recently failed first
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._evict(now)

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


class Throttled(Exception):
    """A key's bucket is empty: refuse without checking, ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed attempts; retry after {retry_after}s")
        self.retry_after = retry_after


# A place in a bucket: the bucket kind ("account" or "address") and the key in it.
Place = tuple[str, str]


class Buckets(Protocol):
    """Where the buckets live: this process (:class:`LocalBuckets`) or Redis, shared by
    replicas (``shared.ratelimit_redis``). Each call is atomic over all ``places``."""

    async def check(self, places: Sequence[Place]) -> None:
        """Raise :class:`Throttled` if any of the buckets is empty."""

    async def take(self, places: Sequence[Place]) -> Buckets:
        """Take a place in every bucket, or none and raise :class:`Throttled`; return the
        buckets that hold the places (the ones to give them back to)."""

    async def give_back(self, places: Sequence[Place]) -> None:
        """Return places taken by :meth:`take`."""


class LocalBuckets:
    """The buckets of this process: a :class:`FailureLimiter` per kind. Nothing here
    awaits, so a check and the take that follows it cannot be interleaved."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.limiters = {
            "account": FailureLimiter(config.accountfailures, config.window),
            "address": FailureLimiter(config.ipfailures, config.window),
        }

    def retry_after(self, places: Sequence[Place]) -> int:
        return max((self.limiters[kind].retry_after(key) for kind, key in places), default=0)

    async def check(self, places: Sequence[Place]) -> None:
        wait = self.retry_after(places)
        if wait:
            raise Throttled(wait)

    async def take(self, places: Sequence[Place]) -> Buckets:
        wait = self.retry_after(places)
        if wait:
            raise Throttled(wait)
        for kind, key in places:
            self.limiters[kind].take(key)
        return self

    async def give_back(self, places: Sequence[Place]) -> None:
        for kind, key in places:
            self.limiters[kind].give_back(key)

    async def close(self) -> None:
        """Nothing to release."""


@dataclass
class Attempt:
    """Places taken for one login; :meth:`give_back` when it did not fail."""

    places: list[Place]
    buckets: Buckets | None = None

    async def give_back(self) -> None:
        places, self.places = self.places, []  # at most once
        if places and self.buckets is not None:
            await self.buckets.give_back(places)


class Admission:
    """The buckets one login is counted in: :meth:`check` before anything (a remembered
    password included), :meth:`take` when a password check is about to start."""

    def __init__(self, places: list[Place], buckets: Buckets | None = None) -> None:
        self.places = places
        self.buckets = buckets

    async def check(self) -> None:
        """Raise :class:`Throttled` if any of the buckets is empty."""
        if self.places and self.buckets is not None:
            await self.buckets.check(self.places)

    async def take(self) -> Attempt:
        """Check and take a place in every bucket, atomically (raises :class:`Throttled`)."""
        if not self.places or self.buckets is None:
            return Attempt([])
        return Attempt(list(self.places), await self.buckets.take(self.places))


class LoginLimits:
    """The account and address buckets of one service, as configured; in this process
    unless ``buckets`` (shared ones, e.g. in Redis) are given."""

    def __init__(self, config: RateLimitConfig, buckets: Buckets | None = None) -> None:
        self.enabled = config.enabled
        self.buckets: Buckets = buckets or LocalBuckets(config)

    def admission(self, account: str | None, ip: str | None) -> Admission:
        """The buckets of a login by ``account`` (None: not by name, e.g. a refresh
        token) from ``ip``; none when the limits are off."""
        if not self.enabled:
            return Admission([])
        places: list[Place] = [("address", client_key(ip))]
        if account is not None:
            # Keys stay small whatever a client sends: no users file holds a longer name,
            # so names that differ only past it may share a bucket.
            places.append(("account", f"account:{account[: MAX_USERNAME_LENGTH + 1]}"))
        return Admission(places, self.buckets)

    async def attempt(self, account: str | None, ip: str | None) -> Attempt:
        """Take a place at once: ``admission(account, ip).take()``."""
        return await self.admission(account, ip).take()


@functools.lru_cache(maxsize=4096)
def client_key(ip: str | None) -> str:
    """The rate-limit key of a client address: the address, or its /64 for IPv6.

    Remembered (bounded): the same clients log in again and again, and parsing the
    address was a few percent of a repeat login's time."""
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
