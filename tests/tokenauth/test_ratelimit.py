"""Failed logins are limited per account and per client address: 429 with Retry-After."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.tokenauth.conftest import ClientFactory, fetch_token
from tokenauth.ratelimit import FailureLimiter, client_key

LIMITS = {
    "TOKENAUTH_RATELIMIT_ACCOUNTFAILURES": "2",
    "TOKENAUTH_RATELIMIT_IPFAILURES": "4",
    "TOKENAUTH_RATELIMIT_WINDOW": "1s",
}


async def test_account_is_locked_after_failures(make_client: ClientFactory) -> None:
    client = await make_client(LIMITS)
    for _ in range(2):
        assert (await fetch_token(client, auth=("alice", "guess")))[0] == 401
    status, body, headers = await fetch_token(client, auth=("alice", "alice-pw"))
    assert status == 429  # even the right password: the guesser must not learn it
    assert body["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert headers["Retry-After"] == "1"
    # Another account from the same address is not locked (the address budget is larger).
    assert (await fetch_token(client, auth=("bob", "bob-pw")))[0] == 200
    await asyncio.sleep(0.55)  # the bucket regains one attempt per 0.5 s
    assert (await fetch_token(client, auth=("alice", "alice-pw")))[0] == 200


async def test_address_is_locked_across_accounts(make_client: ClientFactory) -> None:
    client = await make_client({**LIMITS, "TOKENAUTH_RATELIMIT_WINDOW": "60s"})
    for user in ("u1", "u2", "u3", "u4"):
        assert (await fetch_token(client, auth=(user, "guess")))[0] == 401
    status, _, headers = await fetch_token(client, auth=("bob", "bob-pw"))
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert (await fetch_token(client))[0] == 200  # anonymous requests are not logins


async def test_refresh_failures_count_against_the_address(make_client: ClientFactory) -> None:
    client = await make_client({**LIMITS, "TOKENAUTH_RATELIMIT_WINDOW": "60s"})
    fields = {"service": "registry.test", "client_id": "c", "grant_type": "refresh_token"}
    for _ in range(4):
        async with client.post("/auth", data={**fields, "refresh_token": "x"}) as response:
            assert response.status == 401
    async with client.post("/auth", data={**fields, "refresh_token": "x"}) as response:
        assert response.status == 429 and response.headers["Retry-After"]


def test_token_bucket() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, timedelta(seconds=30), clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("k") == 0
        limiter.record_failure("k")
    assert limiter.retry_after("k") == 10  # one attempt regained every 10 s
    now[0] = 9.5
    assert limiter.retry_after("k") == 1
    now[0] = 10.0
    assert limiter.retry_after("k") == 0
    limiter.reset("k")
    assert len(limiter) == 0


def test_memory_is_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(1, timedelta(seconds=60), max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        limiter.record_failure(f"k{i}")
    assert len(limiter) <= 100
    assert limiter.retry_after("k999") > 0  # the most recent offenders are kept


def test_client_keys() -> None:
    assert client_key("192.0.2.7") == "ip:192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "ip:192.0.2.7"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "ip:2001:db8::/64"
    assert client_key(None) == "ip:unknown"
