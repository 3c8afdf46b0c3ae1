"""The failure buckets themselves: refill, reservations, bounded memory, address keys."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.ratelimit import FailureLimiter, LoginLimits, RateLimitConfig, Throttled, client_key


def test_token_bucket() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, timedelta(seconds=30), clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("k") == 0
        limiter.take("k")
    assert limiter.retry_after("k") == 10  # one attempt regained every 10 s
    now[0] = 9.5
    assert limiter.retry_after("k") == 1
    now[0] = 10.0
    assert limiter.retry_after("k") == 0
    limiter.give_back("k")
    limiter.give_back("k")
    assert len(limiter) == 0  # full again: nothing kept


def test_attempts_take_their_place_before_the_check() -> None:
    """Reservations, not charges after the fact: the 6th concurrent attempt is refused
    while the first five are still being checked, and a success gives its place back."""
    limits = LoginLimits(RateLimitConfig(accountfailures=5, ipfailures=100))
    pending = [limits.attempt("alice", "192.0.2.1") for _ in range(5)]
    with pytest.raises(Throttled) as refused:
        limits.attempt("alice", "192.0.2.2")
    assert refused.value.retry_after == 60
    limits.attempt("bob", "192.0.2.1")  # another account from the same address may go on
    pending[0].give_back()
    pending[0].give_back()  # only once
    limits.attempt("alice", "192.0.2.3").give_back()
    limits.attempt("alice", "192.0.2.3")
    with pytest.raises(Throttled):
        limits.attempt("alice", "192.0.2.3")


def test_account_keys_are_bounded() -> None:
    """A registry login may carry a user name of kilobytes: its bucket key stays small."""
    limits = LoginLimits(RateLimitConfig(accountfailures=1, ipfailures=100))
    limits.attempt("a" * 256 + "x" * 10_000, "192.0.2.1")
    with pytest.raises(Throttled):
        limits.attempt("a" * 256 + "y" * 10_000, "192.0.2.2")


def test_disabled_limits_take_nothing() -> None:
    limits = LoginLimits(RateLimitConfig(enabled=False, accountfailures=1))
    for _ in range(10):
        limits.attempt("alice", "192.0.2.1")
    assert len(limits.account) == len(limits.address) == 0


def test_memory_is_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(1, timedelta(seconds=60), max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        limiter.take(f"k{i}")
    assert len(limiter) <= 100
    assert limiter.retry_after("k999") > 0  # the most recent offenders are kept


def test_client_keys() -> None:
    assert client_key("192.0.2.7") == "ip:192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "ip:192.0.2.7"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "ip:2001:db8::/64"
    assert client_key(None) == "ip:unknown"
