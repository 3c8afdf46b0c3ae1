"""Failed logins are limited per account and per client address: 429 with Retry-After."""

from __future__ import annotations

import asyncio

from tests.tokenauth.conftest import ClientFactory, fetch_token

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
