"""The LDAP authenticator against a real slapd: logins, groups in the ACL, a disabled
user, a changed password and the credential memory, refresh tokens, and the directory
going away (503 and an audit line, never "wrong password")."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.htpasswd import format_htpasswd_line
from tests.deploy.pki import issue, key_pem, pem
from tests.support.slapd import READER_PASSWORD, Slapd
from tests.tokenauth.conftest import (
    CONFIG,
    SERVICE,
    ClientFactory,
    Setup,
    TokenClient,
    fetch_token,
    granted,
)
from tests.tokenauth.test_metrics import ON, AppClient, _scraper

GROUP_ACL = """\
acl:
  - match: {group: developers, name: "dev/*"}
    actions: [pull, push]
    comment: developers push dev/*
  - match: {group: "/.+/", name: "teams/${group}/*"}
    actions: [pull, push]
    comment: each group owns its team namespace
  - match: {account: "/.+/", name: "${account}/*"}
    actions: ["*"]
    comment: each user owns their namespace
"""


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path / "slapd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def use_ldap(setup: Setup, slapd: Slapd, *, ttl: str = "60s", **extra: str) -> None:
    (setup.directory / "reader-bind.txt").write_text(READER_PASSWORD + "\n")
    setup.acl_file.write_text(GROUP_ACL)
    setup.config.write_text(
        CONFIG + slapd.config_yaml(**extra) + f"authn: [users, ldap]\ncredentialcache:\n"
        f"  ttl: {ttl}\n"
    )


async def post(client: TokenClient, **form: str) -> tuple[int, dict[str, Any]]:
    fields = {"service": SERVICE, "client_id": "test", **form}
    async with client.post("/auth", data=fields) as response:
        return response.status, await response.json()


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "tokenauth.audit"]


async def test_directory_users_get_rights_by_group(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    use_ldap(setup, slapd)
    client = await make_client()
    scopes = [
        "repository:dev/app:push,pull",
        "repository:teams/ops/x:push",
        "repository:teams/developers/y:pull",
        "repository:teams/other/z:pull",
        "repository:lena/own:delete",
    ]
    status, body, _ = await fetch_token(client, *scopes, auth=("lena", "lena-ldap"))
    assert status == 200, body
    assert granted(setup, body) == {
        "repository:dev/app": ("pull", "push"),
        "repository:teams/ops/x": ("push",),
        "repository:teams/developers/y": ("pull",),
        "repository:lena/own": ("delete",),
    }
    # carol is in no group: only her own namespace.
    status, body, _ = await fetch_token(client, *scopes, auth=("carol", "carol-ldap"))
    assert status == 200 and granted(setup, body) == {}
    # The htpasswd users are still asked first and still work.
    status, body, _ = await fetch_token(
        client, "repository:alice/a:pull", auth=("alice", "alice-pw")
    )
    assert status == 200 and granted(setup, body) == {"repository:alice/a": ("pull",)}


async def test_wrong_password_disabled_user_and_empty_password_are_refused(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    use_ldap(setup, slapd)
    client = await make_client()
    for user, password in [("lena", "wrong"), ("dave", "dave-ldap"), ("lena", ""), ("nobody", "x")]:
        status, body, headers = await fetch_token(client, auth=(user, password))
        assert status == 401, (user, body)
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert headers["WWW-Authenticate"].startswith("Basic ")


async def test_a_changed_password_is_noticed_within_the_cache_ttl(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    use_ldap(setup, slapd, ttl="2s")
    client = await make_client()
    assert (await fetch_token(client, auth=("erin", "erin-ldap")))[0] == 200
    slapd.set_password("erin", "erin-new")
    # The new password works at once; the old one, remembered, at most ttl longer.
    assert (await fetch_token(client, auth=("erin", "erin-new")))[0] == 200
    await asyncio.sleep(2.5)
    assert (await fetch_token(client, auth=("erin", "erin-ldap")))[0] == 401
    assert (await fetch_token(client, auth=("erin", "erin-new")))[0] == 200


async def test_refresh_tokens_end_when_the_user_is_disabled(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    use_ldap(setup, slapd)
    client = await make_client()
    status, body = await post(
        client, grant_type="password", username="erin", password="erin-ldap", access_type="offline"
    )
    assert status == 200 and body["refresh_token"]
    refresh = body["refresh_token"]
    scope = "repository:teams/developers/app:pull"
    status, body = await post(
        client, grant_type="refresh_token", refresh_token=refresh, scope=scope
    )
    assert status == 200 and body["scope"] == scope  # the groups are read again
    slapd.disable("erin")
    status, body = await post(client, grant_type="refresh_token", refresh_token=refresh)
    assert status == 401 and body["error"] == "invalid_grant"


async def test_directory_down_is_503_with_an_audit_line_never_a_wrong_password(
    make_client: ClientFactory,
    setup: Setup,
    slapd: Slapd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use_ldap(setup, slapd, ttl="0s")
    client = await make_client()
    assert (await fetch_token(client, auth=("lena", "lena-ldap")))[0] == 200
    slapd.stop()
    with caplog.at_level(logging.INFO):
        for password in ("lena-ldap", "wrong"):
            status, body, headers = await fetch_token(client, auth=("lena", password))
            assert status == 503, body
            assert body["errors"][0]["code"] == "UNAVAILABLE"
            assert "Retry-After" in headers and "WWW-Authenticate" not in headers
    line = audit_lines(caplog)[-1]
    assert line["outcome"] == "unavailable" and line["account"] == "lena"
    assert "LDAP" in line["reason"]
    assert "lena-ldap" not in caplog.text and READER_PASSWORD not in caplog.text
    async with client.get("/health") as response:
        health = await response.json()
        assert response.status == 503 and health["ldap"][0]["state"] == "unavailable"
    # htpasswd users, asked first, are not held up by the directory.
    assert (await fetch_token(client, auth=("alice", "alice-pw")))[0] == 200
    slapd.start()  # same port, same database
    assert (await fetch_token(client, auth=("lena", "lena-ldap")))[0] == 200
    async with client.get("/health") as response:
        assert response.status == 200 and (await response.json())["ldap"][0]["state"] == "ok"


async def test_groups_from_a_group_search(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    use_ldap(
        setup,
        slapd,
        groupbase="ou=groups,dc=example,dc=test",
        groupfilter='"(member=${dn})"',
    )
    client = await make_client()
    status, body, _ = await fetch_token(
        client, "repository:teams/ops/x:pull", auth=("lena", "lena-ldap")
    )
    assert status == 200 and granted(setup, body) == {"repository:teams/ops/x": ("pull",)}


async def test_a_burst_of_the_same_login_shares_one_check(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    # A push asks for many tokens at once: more than the account's failure budget (5)
    # of concurrent first logins must not be throttled (each would take a place).
    use_ldap(setup, slapd)
    client = await make_client()
    results = await asyncio.gather(
        *(fetch_token(client, auth=("lena", "lena-ldap")) for _ in range(12))
    )
    assert [status for status, _, _ in results] == [200] * 12


def write_pki(directory: Path) -> tuple[Path, Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it issued, and another CA: their files."""
    directory.mkdir()
    root = issue("ldap test CA", None, ca=True)
    leaf = issue("127.0.0.1", root, ca=False, server=True)
    stranger = issue("another CA", None, ca=True)
    paths = [directory / n for n in ("ca.pem", "leaf.pem", "leaf.key", "other-ca.pem")]
    for path, data in zip(
        paths,
        [
            pem(root.certificate),
            pem(leaf.certificate),
            key_pem(leaf.key),
            pem(stranger.certificate),
        ],
        strict=True,
    ):
        path.write_bytes(data)
    return paths[0], paths[1], paths[2], paths[3]


async def test_starttls_verifies_the_directory_against_the_configured_ca(
    make_client: ClientFactory, setup: Setup, tmp_path: Path
) -> None:
    ca, certificate, key, other_ca = write_pki(tmp_path / "pki")
    server = Slapd(tmp_path / "slapd-tls", tls=(ca, certificate, key))
    server.start()
    try:
        use_ldap(setup, server, tls="starttls", cacertificate=str(ca))
        client = await make_client()
        assert (await fetch_token(client, auth=("lena", "lena-ldap")))[0] == 200
        # A directory whose certificate the configured CA did not issue is unreachable,
        # not a wrong password.
        use_ldap(setup, server, tls="starttls", cacertificate=str(other_ca))
        client = await make_client()
        status, body, _ = await fetch_token(client, auth=("lena", "lena-ldap"))
        assert status == 503 and body["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        server.stop()


async def test_directory_checks_are_counted_by_authenticator(
    make_client: ClientFactory, setup: Setup, slapd: Slapd, aiohttp_client: AppClient
) -> None:
    use_ldap(setup, slapd)
    client = await make_client(ON)
    scrape = await _scraper(aiohttp_client, client)
    assert (await fetch_token(client, auth=("lena", "lena-ldap")))[0] == 200
    assert (await fetch_token(client, auth=("lena", "lena-ldap")))[0] == 200  # remembered
    assert (await fetch_token(client, auth=("lena", "wrong")))[0] == 401
    scraped = await scrape()
    checks = "tokenauth_authenticator_check_seconds_count"
    assert scraped.value(checks, authenticator="ldap", result="match") == 1
    assert scraped.value(checks, authenticator="ldap", result="mismatch") == 1
    # No bcrypt for directory users: the users files say "not mine" without a check.
    assert scraped.value("tokenauth_bcrypt_check_seconds_count") == 0


async def test_a_wrong_directory_password_takes_as_long_as_an_unknown_user(
    make_client: ClientFactory, setup: Setup, slapd: Slapd
) -> None:
    # With a costly hash in the users file, an unknown user's refusal costs a bcrypt check
    # (a dummy one); a directory user's wrong password must not answer faster, or timing
    # would tell which names the directory has.
    use_ldap(setup, slapd)
    setup.users_file.write_text(format_htpasswd_line("admin", "admin-pw", cost=11) + "\n")
    client = await make_client()

    async def refusal(user: str) -> float:
        started = time.monotonic()
        assert (await fetch_token(client, auth=(user, "wrong")))[0] == 401
        return time.monotonic() - started

    unknown = min([await refusal(f"nobody{i}") for i in range(3)])
    directory = min([await refusal("lena") for _ in range(3)])
    assert directory >= 0.5 * unknown, (directory, unknown)
