"""``GET /health``: the users files, the ACL and the signing key, as they stand now."""

from __future__ import annotations

import datetime
from typing import Any

from shared.jose_keys import thumbprint
from tests.tokenauth.conftest import ACL, Setup, TokenClient, fetch_token


async def health(client: TokenClient) -> tuple[int, Any, str]:
    async with client.get("/health") as response:
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json(), await response.text()


async def test_health_reports_users_acl_and_key(client: TokenClient, setup: Setup) -> None:
    status, body, text = await health(client)
    assert status == 200 and body["status"] == "ok"
    (users,) = body["users"]
    assert users["path"] == str(setup.users_file) and users["state"] == "ok"
    assert users["loaded"] is True and users["entries"] == 4 and users["error"] is None
    loaded_at = datetime.datetime.fromisoformat(users["loaded_at"])
    assert abs(datetime.datetime.now(datetime.UTC) - loaded_at) < datetime.timedelta(minutes=5)
    acl = body["acl"]
    assert acl["path"] == str(setup.acl_file) and acl["rules"] == 4 and acl["error"] is None
    key = body["signing_key"]
    assert key == {
        "loaded": True,
        "algorithm": "ES256",
        "key_id": thumbprint(setup.key.public_key()),
        "certificates": 1,
        "published": [thumbprint(setup.key.public_key())],
        "error": None,
    }
    # Never a secret: no hash, no user name, no key material.
    assert "$2" not in text and "alice" not in text and "PRIVATE" not in text


async def test_a_users_file_gone_is_stale_with_the_error_and_still_serves(
    client: TokenClient, setup: Setup
) -> None:
    contents = setup.users_file.read_bytes()
    setup.users_file.unlink()
    status, body, _ = await health(client)
    assert status == 200 and body["status"] == "stale"
    (users,) = body["users"]
    assert users["state"] == "stale" and users["entries"] == 4  # the previous ones in force
    assert "No such file or directory" in users["error"]
    _, token, _ = await fetch_token(client, "repository:alice/a:pull", auth=("alice", "alice-pw"))
    assert token["token"]
    setup.users_file.write_bytes(contents)
    status, body, _ = await health(client)
    assert status == 200 and body["status"] == "ok" and body["users"][0]["error"] is None


async def test_a_broken_acl_is_stale_and_the_previous_one_stays(
    client: TokenClient, setup: Setup
) -> None:
    setup.acl_file.write_text("acl: [ {match: broken\n")
    status, body, _ = await health(client)
    assert status == 200 and body["status"] == "stale"
    assert body["acl"]["state"] == "stale" and body["acl"]["rules"] == 4
    assert "not valid YAML" in body["acl"]["error"]
    setup.acl_file.write_text(ACL + "  - match: {account: bob}\n    actions: [pull]\n")
    status, body, _ = await health(client)
    assert status == 200 and body["status"] == "ok"
    assert body["acl"]["rules"] == 5 and body["acl"]["error"] is None
