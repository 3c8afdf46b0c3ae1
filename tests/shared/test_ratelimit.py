"""The failure buckets themselves: refill, reservations, bounded memory, address keys;
the same checks on buckets in this process and in Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from shared.ratelimit import (
    Attempt,
    FailureLimiter,
    LoginLimits,
    RateLimitConfig,
    Throttled,
    client_key,
)
from shared.ratelimit_redis import RedisBuckets
from shared.redis_client import redis_client
from shared.redis_config import RedisConfig
from tests.support.backing_services import shared_services
from tests.support.redis_sentinel import RedisSentinelGroup
from tests.support.tools import free_port

MakeLimits = Callable[[RateLimitConfig], LoginLimits]


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


@pytest.fixture(params=["local", "redis"])
async def make_limits(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimits]:
    """Login limits with their buckets in this process, or in a real Redis (each test's
    keys under a prefix of its own; they expire by themselves)."""
    made: list[RedisBuckets] = []

    def make(config: RateLimitConfig) -> LoginLimits:
        if request.param == "local":
            return LoginLimits(config)
        server = shared_services().redis_server()
        client = redis_client(RedisConfig(addr=server.addr))
        buckets = RedisBuckets(client, config, prefix=f"test:{uuid.uuid4()}:")
        made.append(buckets)
        return LoginLimits(config, buckets)

    yield make
    for buckets in made:
        await buckets.close()


async def test_attempts_take_their_place_before_the_check(make_limits: MakeLimits) -> None:
    """Reservations, not charges after the fact: the 6th concurrent attempt is refused
    while the first five are still being checked, and a success gives its place back."""
    limits = make_limits(RateLimitConfig(accountfailures=5, ipfailures=100))
    pending = [await limits.attempt("alice", "192.0.2.1") for _ in range(5)]
    with pytest.raises(Throttled) as refused:
        await limits.attempt("alice", "192.0.2.2")
    assert 59 <= refused.value.retry_after <= 60
    await limits.attempt("bob", "192.0.2.1")  # another account from the same address may go on
    await pending[0].give_back()
    await pending[0].give_back()  # only once
    await (await limits.attempt("alice", "192.0.2.3")).give_back()
    await limits.attempt("alice", "192.0.2.3")
    with pytest.raises(Throttled):
        await limits.attempt("alice", "192.0.2.3")


async def test_concurrent_attempts_get_exactly_the_budget(make_limits: MakeLimits) -> None:
    limits = make_limits(RateLimitConfig(accountfailures=5, ipfailures=1000))
    results = await asyncio.gather(
        *(limits.attempt("carol", f"192.0.2.{i}") for i in range(40)), return_exceptions=True
    )
    assert sum(isinstance(r, Attempt) for r in results) == 5
    assert all(isinstance(r, Attempt | Throttled) for r in results)


async def test_account_keys_are_bounded(make_limits: MakeLimits) -> None:
    """A registry login may carry a user name of kilobytes: its bucket key stays small."""
    limits = make_limits(RateLimitConfig(accountfailures=1, ipfailures=100))
    await limits.attempt("a" * 256 + "x" * 10_000, "192.0.2.1")
    with pytest.raises(Throttled):
        await limits.attempt("a" * 256 + "y" * 10_000, "192.0.2.2")


async def test_disabled_limits_take_nothing(make_limits: MakeLimits) -> None:
    limits = make_limits(RateLimitConfig(enabled=False, accountfailures=1))
    for _ in range(10):
        await limits.attempt("alice", "192.0.2.1")
    await limits.admission("alice", "192.0.2.1").check()


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


@pytest.mark.parametrize("through", ["server", "sentinels"])
async def test_redis_down_counts_in_this_process_and_says_so(
    caplog: pytest.LogCaptureFixture, through: str
) -> None:
    """Never open: without Redis (or without any sentinel to name its master) the budget
    holds per process, with one warning."""
    config = RateLimitConfig(accountfailures=2, ipfailures=100)
    timeout = timedelta(seconds=2)
    if through == "server":
        unreachable = RedisConfig(addr=f"127.0.0.1:{free_port()}", dialtimeout=timeout)
    else:
        sentinels = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        unreachable = RedisConfig(addrs=sentinels, mastername="m", dialtimeout=timeout)
    buckets = RedisBuckets(redis_client(unreachable), config, where="Redis at test")
    limits = LoginLimits(config, buckets)
    try:
        for _ in range(2):
            await limits.attempt("dave", "192.0.2.1")
        with pytest.raises(Throttled):
            await limits.attempt("dave", "192.0.2.1")
    finally:
        await buckets.close()
    warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1 and "Redis at test" in warnings[0].getMessage()


async def test_buckets_through_sentinels_keep_their_count_across_a_failover(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The budget of every replica, kept in the master the sentinels name: a failover
    (the replica promoted, holding the buckets it replicated) loses none of it."""
    group = RedisSentinelGroup(tmp_path / "sentinels")
    group.start()
    try:
        config = RateLimitConfig(accountfailures=3, ipfailures=100)
        client = redis_client(RedisConfig(**group.redis_settings()))
        buckets = RedisBuckets(client, config, where="Redis at test")
        try:
            limits = LoginLimits(config, buckets)
            for _ in range(2):
                await limits.attempt("erin", "192.0.2.7")
            old = group.master()
            assert group.failover() is not old
            await limits.attempt("erin", "192.0.2.7")
            with pytest.raises(Throttled):
                await limits.attempt("erin", "192.0.2.7")
        finally:
            await buckets.close()
    finally:
        group.stop()
    # Counted in Redis throughout: never in this process's buckets instead.
    assert not [r for r in caplog.records if "does not answer" in r.getMessage()]
