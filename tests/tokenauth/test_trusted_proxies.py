"""The client address behind a load balancer: ``X-Forwarded-For`` / ``Forwarded`` count
only from ``http.trustedproxies``; the address then serves rate limits, ACL ``ip`` rules
and audit lines (the header from anyone else is ignored)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.tokenauth.conftest import ClientFactory, Setup, TokenClient, basic, granted

LIMITS = {"TOKENAUTH_RATELIMIT_IPFAILURES": "4", "TOKENAUTH_RATELIMIT_WINDOW": "60s"}
TRUSTED = {"TOKENAUTH_HTTP_TRUSTEDPROXIES": "[127.0.0.1/32]"}


async def token_for(
    client: TokenClient,
    client_address: str,
    auth: tuple[str, str] | None = None,
    scope: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """GET /auth through a "proxy" (this test, on loopback) saying the client is
    ``client_address``; (status, JSON body)."""
    params = {"service": "registry.test", **({"scope": scope} if scope else {})}
    headers = {"X-Forwarded-For": client_address, **(basic(*auth) if auth else {})}
    async with client.get("/auth", params=params, headers=headers) as response:
        return response.status, await response.json()


def audit_ips(caplog: pytest.LogCaptureFixture) -> list[Any]:
    records = [r for r in caplog.records if r.name == "tokenauth.audit"]
    return [json.loads(r.getMessage())["ip"] for r in records]


async def test_spoofed_address_from_an_untrusted_peer_is_ignored(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(LIMITS)
    with caplog.at_level(logging.INFO, logger="tokenauth.audit"):
        for n, user in enumerate(("u1", "u2", "u3", "u4")):
            assert (await token_for(client, f"203.0.113.{n}", (user, "guess")))[0] == 401
        # A fifth "client" is the same peer: that address's budget is spent.
        assert (await token_for(client, "203.0.113.99", ("bob", "bob-pw")))[0] == 429
    assert set(audit_ips(caplog)) == {"127.0.0.1"}


async def test_forwarded_address_counts_behind_a_trusted_proxy(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client({**LIMITS, **TRUSTED})
    with caplog.at_level(logging.INFO, logger="tokenauth.audit"):
        for user in ("u1", "u2", "u3", "u4"):
            assert (await token_for(client, "203.0.113.1", (user, "guess")))[0] == 401
        # Another client behind the same balancer is not limited by the guesser's failures.
        assert (await token_for(client, "203.0.113.2", ("bob", "bob-pw")))[0] == 200
        assert (await token_for(client, "203.0.113.1", ("bob", "bob-pw")))[0] == 429
    assert audit_ips(caplog) == ["203.0.113.1"] * 4 + ["203.0.113.2", "203.0.113.1"]


LAN_ACL = """\
acl:
  - match: {ip: 203.0.113.0/24, name: "lan/*"}
    actions: [pull]
"""


@pytest.mark.parametrize(("overrides", "actions"), [({}, ()), (TRUSTED, ("pull",))])
async def test_acl_ip_rules_see_the_forwarded_address(
    make_client: ClientFactory,
    setup: Setup,
    overrides: dict[str, str],
    actions: tuple[str, ...],
) -> None:
    setup.acl_file.write_text(LAN_ACL)
    client = await make_client(overrides)
    status, body = await token_for(client, "203.0.113.5", scope="repository:lan/app:pull")
    assert status == 200
    assert granted(setup, body).get("repository:lan/app", ()) == actions
