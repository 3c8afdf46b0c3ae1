"""POST /auth (OAuth2): password and refresh_token grants, and every refresh-token refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt

from shared.token import Claims, TokenSigner
from tests.tokenauth.conftest import (
    ISSUER,
    OTHER_SERVICE,
    SERVICE,
    USERS,
    Setup,
    TokenClient,
    fetch_token,
    granted,
)


async def post(client: TokenClient, **form: str) -> tuple[int, dict[str, Any]]:
    fields = {"service": SERVICE, "client_id": "docker", **form}
    async with client.post("/auth", data=fields) as response:
        return response.status, await response.json()


async def login(client: TokenClient, user: str = "alice", **form: str) -> dict[str, Any]:
    status, body = await post(
        client,
        grant_type="password",
        username=user,
        password=USERS[user],
        access_type="offline",
        **form,
    )
    assert status == 200, body
    return body


async def test_password_grant(client: TokenClient, setup: Setup) -> None:
    body = await login(client, scope="repository:alice/app:push,pull repository:bob/x:pull")
    assert body["scope"] == "repository:alice/app:pull,push"
    assert body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    assert body["refresh_token"]
    assert granted(setup, body) == {"repository:alice/app": ("pull", "push")}


async def test_password_grant_without_offline_has_no_refresh_token(client: TokenClient) -> None:
    status, body = await post(client, grant_type="password", username="bob", password="bob-pw")
    assert status == 200 and "refresh_token" not in body


async def test_refresh_token_is_reusable_with_new_scopes(client: TokenClient, setup: Setup) -> None:
    refresh = (await login(client))["refresh_token"]
    for scope in (
        "repository:alice/one:push",
        "repository:alice/two:pull repository:public/x:pull",
    ):
        status, body = await post(
            client, grant_type="refresh_token", refresh_token=refresh, scope=scope
        )
        assert status == 200, body
        assert body["refresh_token"] == refresh
        assert setup.verify(body["access_token"]).subject == "alice"
    assert granted(setup, body) == {
        "repository:alice/two": ("pull",),
        "repository:public/x": ("pull",),
    }


async def test_docker_login_refresh_token_works_for_oauth(client: TokenClient) -> None:
    _, body, _ = await fetch_token(client, auth=("bob", "bob-pw"), offline_token="true")
    status, _ = await post(client, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert status == 200


async def test_refresh_token_is_bound_to_its_service(client: TokenClient) -> None:
    refresh = (await login(client))["refresh_token"]
    status, body = await post(
        client, grant_type="refresh_token", refresh_token=refresh, service=OTHER_SERVICE
    )
    assert status == 401 and body["error"] == "invalid_grant"
    assert "another service" in body["errors"][0]["message"]


def forged_refresh(setup: Setup, **changes: Any) -> str:
    """A refresh token signed with the real key, with chosen claims."""
    values: dict[str, Any] = {"subject": "alice", "lifetime": timedelta(hours=1), "now": None}
    values.update(changes)
    extra = {"service": SERVICE, "credential": values.pop("credential", "x")}
    claims = Claims.issue(
        issuer=ISSUER, audience="tokenauth-refresh:" + ISSUER, extra=extra, **values
    )
    return TokenSigner(setup.key).sign(claims, typ="refresh+jwt")


async def test_wrong_and_expired_refresh_tokens(client: TokenClient, setup: Setup) -> None:
    body = await login(client)
    real, access = body["refresh_token"], body["access_token"]
    credential = str(jwt.decode(real, options={"verify_signature": False})["credential"])
    expired = forged_refresh(
        setup, credential=credential, lifetime=timedelta(seconds=60), now=1_000_000
    )
    for token in ("garbage", real[:-4] + "AAAA", access, expired):
        status, body = await post(client, grant_type="refresh_token", refresh_token=token)
        assert status == 401, token
        assert body["error"] == "invalid_grant"
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
    # The same claims with a live expiry are accepted: the expiry is what was refused.
    live = forged_refresh(setup, credential=credential)
    status, _ = await post(client, grant_type="refresh_token", refresh_token=live)
    assert status == 200


async def test_refresh_ends_when_user_is_removed_or_password_changes(
    client: TokenClient, setup: Setup
) -> None:
    alice = (await login(client, "alice"))["refresh_token"]
    bob = (await login(client, "bob"))["refresh_token"]
    users = {k: v for k, v in USERS.items() if k != "bob"} | {"alice": "new-password"}
    setup.write_users(users)
    for token in (alice, bob):
        status, body = await post(client, grant_type="refresh_token", refresh_token=token)
        assert status == 401, body


async def test_request_errors(client: TokenClient) -> None:
    status, body = await post(client, grant_type="client_credentials")
    assert status == 400 and body["error"] == "unsupported_grant_type"
    status, body = await post(client, grant_type="password", username="alice", client_id="")
    assert status == 400 and "client_id" in body["errors"][0]["message"]
    status, body = await post(client, grant_type="password", username="alice")
    assert status == 400 and body["error"] == "invalid_request"
    status, body = await post(client, grant_type="refresh_token")
    assert status == 400 and body["error"] == "invalid_request"
    status, body = await post(
        client, grant_type="password", username="alice", password="alice-pw", scope="bad"
    )
    assert status == 400 and body["error"] == "invalid_scope"
    status, body = await post(client, grant_type="password", username="alice", password="no")
    assert status == 401 and body["error"] == "invalid_grant"


async def test_oversized_body_is_refused(client: TokenClient) -> None:
    async with client.post("/auth", data={"scope": "x" * 100_000}) as response:
        assert response.status == 413
