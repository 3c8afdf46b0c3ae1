"""GET /auth as docker, skopeo and anonymous clients use it, against the real app."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt

from shared.jose_keys import thumbprint
from tests.tokenauth.conftest import (
    OTHER_SERVICE,
    REALM,
    SERVICE,
    Setup,
    TokenClient,
    basic,
    fetch_token,
    granted,
)


async def test_docker_login_shape(client: TokenClient, setup: Setup) -> None:
    status, body, headers = await fetch_token(
        client,
        auth=("alice", "alice-pw"),
        account="alice",
        client_id="docker",
        offline_token="true",
    )
    assert status == 200
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    issued = datetime.fromisoformat(body["issued_at"])
    assert abs((datetime.now(UTC) - issued).total_seconds()) < 60
    assert body["refresh_token"]
    assert headers["Cache-Control"] == "no-store"
    claims = setup.verify(body["token"])
    assert claims.subject == "alice" and claims.access == ()
    assert claims.expires_at - claims.issued_at == 300


async def test_token_header_and_claims(client: TokenClient, setup: Setup) -> None:
    _, body, _ = await fetch_token(client, "repository:alice/app:pull", auth=("alice", "alice-pw"))
    header = jwt.get_unverified_header(body["token"])
    assert header["typ"] == "JWT" and header["alg"] == "ES256"
    assert header["kid"] == thumbprint(setup.key.public_key())
    assert len(header["x5c"]) == 1
    payload = jwt.decode(body["token"], options={"verify_signature": False})
    assert payload["aud"] == SERVICE and payload["iss"] == "portside-test-issuer"
    assert payload["access"] == [{"type": "repository", "name": "alice/app", "actions": ["pull"]}]
    assert {"exp", "nbf", "iat", "jti", "sub"} <= set(payload)


async def test_push_with_mount_sources_gets_requested_intersect_allowed(
    client: TokenClient, setup: Setup
) -> None:
    status, body, _ = await fetch_token(
        client,
        "repository:alice/app:push,pull",
        "repository:public/base:pull",
        "repository:bob/secret:pull",
        "repository:public/base:push",
        auth=("alice", "alice-pw"),
    )
    assert status == 200
    assert granted(setup, body) == {
        "repository:alice/app": ("pull", "push"),
        "repository:public/base": ("pull",),
    }


async def test_rights_are_never_an_error(client: TokenClient, setup: Setup) -> None:
    status, body, _ = await fetch_token(client, "repository:admin/x:push", auth=("bob", "bob-pw"))
    assert status == 200 and granted(setup, body) == {}


async def test_anonymous_gets_public_pull_only(client: TokenClient, setup: Setup) -> None:
    status, body, _ = await fetch_token(
        client,
        "repository:public/base:pull,push",
        "repository:alice/app:pull",
        offline_token="true",
    )
    assert status == 200
    assert setup.verify(body["token"]).subject == ""
    assert granted(setup, body) == {"repository:public/base": ("pull",)}
    assert "refresh_token" not in body  # nobody to refresh for


async def test_star_requests(client: TokenClient, setup: Setup) -> None:
    _, body, _ = await fetch_token(client, "repository:alice/app:*", auth=("alice", "alice-pw"))
    assert granted(setup, body) == {"repository:alice/app": ("*",)}
    _, body, _ = await fetch_token(client, "repository:ci/tool:*", auth=("ci", "ci-pw"))
    assert granted(setup, body) == {"repository:ci/tool": ("pull", "push")}
    _, body, _ = await fetch_token(client, "repository:public/base:*")
    assert granted(setup, body) == {"repository:public/base": ("pull",)}


async def test_catalog_only_for_admin(client: TokenClient, setup: Setup) -> None:
    _, body, _ = await fetch_token(client, "registry:catalog:*", auth=("admin", "admin-pw"))
    assert granted(setup, body) == {"registry:catalog": ("*",)}
    _, body, _ = await fetch_token(client, "registry:catalog:*", auth=("alice", "alice-pw"))
    assert granted(setup, body) == {}


async def test_host_port_names_and_plugin_class(client: TokenClient, setup: Setup) -> None:
    _, body, _ = await fetch_token(
        client, "repository(plugin):alice/sshfs:pull", auth=("alice", "alice-pw")
    )
    claims = setup.verify(body["token"])
    assert [(s.type, s.resource_class, s.name) for s in claims.access] == [
        ("repository", "plugin", "alice/sshfs")
    ]


async def test_the_token_is_for_the_requested_service(client: TokenClient, setup: Setup) -> None:
    _, body, _ = await fetch_token(client, auth=("alice", "alice-pw"), service=OTHER_SERVICE)
    assert setup.verify(body["token"], OTHER_SERVICE).audience == OTHER_SERVICE


async def test_bad_credentials_are_401_with_basic_challenge(client: TokenClient) -> None:
    for auth in (("alice", "wrong"), ("nobody", "alice-pw")):
        status, body, headers = await fetch_token(client, "repository:alice/app:pull", auth=auth)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith(f'Basic realm="{REALM}"')
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert "token" not in body


async def test_malformed_basic_header_is_401(client: TokenClient) -> None:
    for value in ("Basic !!!not-base64", "Bearer abc", "Basic " + "YWxpY2U="):
        async with client.get(
            "/auth", params={"service": SERVICE}, headers={"Authorization": value}
        ) as response:
            assert response.status == 401, value


async def test_unknown_or_missing_service_is_400(client: TokenClient) -> None:
    status, body, _ = await fetch_token(client, auth=("alice", "alice-pw"), service="elsewhere")
    assert status == 400 and body["errors"][0]["code"] == "INVALID_REQUEST"
    assert "unknown service" in body["errors"][0]["message"]
    status, body, _ = await fetch_token(client, service=None)
    assert status == 400 and "service" in body["errors"][0]["message"]


async def test_malformed_scopes_are_400_with_a_clear_message(client: TokenClient) -> None:
    for scope in ("repository:alice/app", "repository:Alice/App:pull", "nope", "a:b:PULL"):
        status, body, _ = await fetch_token(client, scope, auth=("alice", "alice-pw"))
        assert status == 400, scope
        message = body["errors"][0]["message"]
        assert message.startswith("malformed scope:") and scope in message


async def test_too_many_scopes_are_400(client: TokenClient) -> None:
    scopes = [f"repository:alice/r{i}:pull" for i in range(65)]
    status, body, _ = await fetch_token(client, *scopes, auth=("alice", "alice-pw"))
    assert status == 400 and "more than 64" in body["errors"][0]["message"]


async def test_account_must_match_the_login(client: TokenClient) -> None:
    status, body, _ = await fetch_token(client, auth=("alice", "alice-pw"), account="admin")
    assert status == 400 and "account" in body["errors"][0]["message"]


async def test_head_and_other_methods_are_not_token_requests(client: TokenClient) -> None:
    async with client.put("/auth", headers=basic("alice", "alice-pw")) as response:
        assert response.status == 405
