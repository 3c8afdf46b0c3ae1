"""Reading an upstream's challenge, and where the mirror refuses to send credentials."""

from __future__ import annotations

import aiohttp
import pytest

from registry.proxy.auth import Challenge, UpstreamAuth, UpstreamAuthError, parse_challenge


def test_challenges_as_registries_send_them() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull",error="insufficient_scope"'
    )
    assert parse_challenge(header) == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/nginx:pull",
            "error": "insufficient_scope",
        },
    )
    assert parse_challenge('Basic realm="Registry Realm"') == Challenge(
        "basic", {"realm": "Registry Realm"}
    )
    assert parse_challenge('bearer realm="a\\"b", service=x') == Challenge(
        "bearer", {"realm": 'a"b', "service": "x"}
    )
    assert parse_challenge("") is None


async def test_credentials_of_an_https_upstream_never_go_to_a_plain_http_realm() -> None:
    async with aiohttp.ClientSession() as session:
        auth = UpstreamAuth(session, "user", "secret", https_only=True)
        challenge = Challenge("bearer", {"realm": "http://127.0.0.1:9/token"})
        with pytest.raises(UpstreamAuthError, match="not https"):
            await auth.answer(challenge, "repository:x:pull")


async def test_a_challenge_without_a_realm_cannot_be_answered() -> None:
    async with aiohttp.ClientSession() as session:
        auth = UpstreamAuth(session, "", "")
        assert await auth.answer(Challenge("bearer", {}), "repository:x:pull") is None
        assert await auth.answer(Challenge("negotiate", {}), "repository:x:pull") is None
