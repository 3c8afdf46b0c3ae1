"""tokenauth's metrics on ``http.debug.addr``: token decisions by outcome and grant type,
bcrypt checks, rate-limit refusals, reloads of the users file and the ACL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.support.metrics import Scrape, parse
from tests.tokenauth.conftest import SERVICE, USERS, ClientFactory, Setup, TokenClient, fetch_token
from tokenauth.app import create_debug_app

ON = {"TOKENAUTH_HTTP_DEBUG_PROMETHEUS_ENABLED": "true"}
AppClient = Callable[[web.Application], Awaitable[TokenClient]]


async def _scraper(
    aiohttp_client: AppClient, client: TokenClient
) -> Callable[[], Awaitable[Scrape]]:
    debug = await aiohttp_client(create_debug_app(client.app))

    async def scrape() -> Scrape:
        async with debug.get("/metrics") as response:
            assert response.status == 200
            return parse(await response.text())

    return scrape


def _tokens(scraped: Scrape, outcome: str, grant: str) -> float:
    return scraped.value("tokenauth_token_requests_total", outcome=outcome, grant_type=grant)


async def test_token_decisions_and_bcrypt_checks_are_counted(
    make_client: ClientFactory, aiohttp_client: AppClient
) -> None:
    client = await make_client(ON)
    scrape = await _scraper(aiohttp_client, client)
    assert (await fetch_token(client, "repository:public/x:pull"))[0] == 200
    assert (await fetch_token(client, auth=("alice", USERS["alice"])))[0] == 200
    assert (await fetch_token(client, auth=("alice", USERS["alice"])))[0] == 200  # remembered
    assert (await fetch_token(client, auth=("alice", "wrong")))[0] == 401
    form = {"service": SERVICE, "client_id": "t", "grant_type": "made-up-" + "x" * 40}
    async with client.post("/auth", data=form) as response:
        assert response.status == 400
    scraped = await scrape()
    assert _tokens(scraped, "granted", "anonymous") == 1
    assert _tokens(scraped, "granted", "basic") == 2
    assert _tokens(scraped, "unauthorized", "basic") == 1
    assert _tokens(scraped, "invalid_request", "other") == 1  # never the client's text
    assert scraped.label_values("grant_type") <= {
        "anonymous", "basic", "password", "refresh_token", "none", "other"
    }  # fmt: skip
    # One check per new password: the second login was remembered.
    assert scraped.value("tokenauth_bcrypt_check_seconds_count", result="match") == 1
    assert scraped.value("tokenauth_bcrypt_check_seconds_count", result="mismatch") == 1
    assert scraped.value("tokenauth_bcrypt_check_seconds_sum") > 0
    assert scraped.value("tokenauth_ratelimit_refusals_total") == 0


async def test_rate_limit_refusals_are_counted(
    make_client: ClientFactory, aiohttp_client: AppClient
) -> None:
    client = await make_client(
        {**ON, "TOKENAUTH_RATELIMIT_ACCOUNTFAILURES": "2", "TOKENAUTH_RATELIMIT_WINDOW": "60s"}
    )
    scrape = await _scraper(aiohttp_client, client)
    for _ in range(2):
        assert (await fetch_token(client, auth=("bob", "guess")))[0] == 401
    for _ in range(3):
        assert (await fetch_token(client, auth=("bob", "guess")))[0] == 429
    scraped = await scrape()
    assert scraped.value("tokenauth_ratelimit_refusals_total", reason="throttled") == 3
    assert _tokens(scraped, "toomanyrequests", "basic") == 3


async def test_reloads_of_users_and_acl_are_counted(
    setup: Setup, make_client: ClientFactory, aiohttp_client: AppClient
) -> None:
    client = await make_client(ON)
    scrape = await _scraper(aiohttp_client, client)

    def reloads(scraped: Scrape, file: str, result: str) -> float:
        return scraped.value("tokenauth_reloads_total", file=file, result=result)

    setup.acl_file.write_text("acl: [this is not: valid")
    assert (await fetch_token(client, "repository:public/x:pull"))[0] == 200
    assert (await fetch_token(client, "repository:public/x:pull"))[0] == 200
    setup.acl_file.write_text("acl: []\n")
    assert (await fetch_token(client, "repository:public/x:pull"))[0] == 200
    setup.write_users({**USERS, "carol": "carol-pw"})
    assert (await fetch_token(client, auth=("carol", "carol-pw")))[0] == 200
    setup.users_file.unlink()
    for _ in range(2):  # the users in memory stay in force
        assert (await fetch_token(client, auth=("carol", "carol-pw")))[0] == 200
    scraped = await scrape()
    # Failures are counted once per problem, not once per request that meets it.
    assert reloads(scraped, "acl", "failure") == 1
    assert reloads(scraped, "acl", "success") == 1
    assert reloads(scraped, "users", "success") == 1
    assert reloads(scraped, "users", "failure") == 1


async def test_no_metrics_unless_enabled(
    make_client: ClientFactory, aiohttp_client: AppClient
) -> None:
    client = await make_client()
    debug = await aiohttp_client(create_debug_app(client.app))
    async with debug.get("/metrics") as response:
        assert response.status == 404
