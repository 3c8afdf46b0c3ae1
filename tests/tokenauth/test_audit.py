"""One audit line per decision, with who/what/outcome and never a secret."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.tokenauth.conftest import ClientFactory, basic, fetch_token


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "tokenauth.audit"]


async def test_one_line_per_decision_without_secrets(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    with caplog.at_level(logging.DEBUG):
        _, ok, _ = await fetch_token(
            client,
            "repository:alice/app:push,pull",
            "repository:bob/x:pull",
            auth=("alice", "alice-pw"),
            client_id="docker",
            offline_token="true",
        )
        await fetch_token(client, "repository:alice/app:pull", auth=("alice", "wrong-secret"))
        await fetch_token(client, "bad-scope", auth=("alice", "alice-pw"))
        async with client.post(
            "/auth",
            data={
                "grant_type": "refresh_token",
                "refresh_token": ok["refresh_token"],
                "service": "registry.test",
                "client_id": "docker",
            },
        ) as response:
            assert response.status == 200
            refreshed = await response.json()
    lines = audit_lines(caplog)
    assert [line["outcome"] for line in lines] == [
        "granted",
        "unauthorized",
        "invalid_request",
        "granted",
    ]
    first = lines[0]
    assert first["account"] == "alice" and first["ip"] == "127.0.0.1"
    assert first["service"] == "registry.test" and first["client_id"] == "docker"
    assert first["requested"] == ["repository:alice/app:pull,push", "repository:bob/x:pull"]
    assert first["granted"] == ["repository:alice/app:pull,push"]
    assert first["rules"] == [3, None] and first["grant"] == "basic" and first["jti"]
    assert lines[1]["reason"] == "invalid username or password"
    assert lines[3]["grant"] == "refresh_token" and lines[3]["account"] == "alice"
    everything = caplog.text + "".join(str(r.args) for r in caplog.records)
    secrets = [
        "alice-pw",
        "wrong-secret",
        ok["token"],
        ok["refresh_token"],
        refreshed["access_token"],
        basic("alice", "alice-pw")["Authorization"],
    ]
    for secret in secrets:
        assert secret not in everything


async def test_client_text_cannot_forge_lines(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    with caplog.at_level(logging.INFO, logger="tokenauth.audit"):
        await fetch_token(client, client_id='x"}\n{"outcome": "granted' + "y" * 500)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tokenauth.audit"]
    assert "\n" not in line and len(json.loads(line)["client_id"]) <= 130
