"""The token responses' bytes are what ``json.dumps`` writes for the same document, in
the documented key order: the access token is put into the JSON without the encoder
(``tokenauth.handlers.token_json``), everything else goes through it."""

from __future__ import annotations

import json
import re

from tests.tokenauth.conftest import ClientFactory, basic

JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


async def test_token_responses_are_json_dumps_output(make_client: ClientFactory) -> None:
    client = await make_client()
    query = {
        "service": "registry.test",
        "scope": "repository:alice/app:pull",
        "offline_token": "true",
        "client_id": "docker",
    }
    async with client.get("/auth", params=query, headers=basic("alice", "alice-pw")) as response:
        assert response.status == 200
        raw = await response.read()
    body = json.loads(raw)
    assert list(body) == ["access_token", "expires_in", "issued_at", "token", "refresh_token"]
    assert raw == json.dumps(body).encode()
    assert body["token"] == body["access_token"] and JWS.fullmatch(body["token"])
    form = {
        "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"],
        "service": "registry.test",
        "client_id": "docker",
        "scope": "repository:alice/app:pull",
    }
    async with client.post("/auth", data=form) as response:
        assert response.status == 200
        raw = await response.read()
    body = json.loads(raw)
    assert list(body) == ["access_token", "expires_in", "issued_at", "scope", "refresh_token"]
    assert raw == json.dumps(body).encode()
    assert JWS.fullmatch(body["access_token"])
