"""Malformed credentials from unauthenticated clients: a 401 challenge with the JSON
envelope and an access-log line, never a 500 with a traceback in the log."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from shared.htpasswd import format_htpasswd_line
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Reply, assert_error, send_raw


def _b64url(value: object) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")


# A JWT whose header names its key by a list: PyJWT refuses it with its own exception type.
KID_LIST_TOKEN = _b64url({"alg": "ES256", "kid": ["a"]}) + b"." + _b64url({"iss": "x"}) + b".AA"


async def get_v2(client: RegistryClient, authorization: bytes) -> Reply:
    """``GET /v2/`` with the header's exact bytes, however undecodable."""
    request = b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    (reply,) = await send_raw(client, request + b"Authorization: " + authorization + b"\r\n\r\n")
    return reply


def assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer " + KID_LIST_TOKEN,
        b"Bearer \xff\xfe\x80",  # not UTF-8
        b"Bearer e\xc3\xa9.e\xc3\xa9.e\xc3\xa9",  # UTF-8, but not a token68
        b"Bearer ",
    ],
)
async def test_malformed_bearer_token_is_an_invalid_token_challenge(
    registry_token: RegistryClient, authorization: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        reply = await get_v2(registry_token, authorization)
    assert_error(reply, 401, "UNAUTHORIZED")
    assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]
    assert_no_errors_logged(caplog)


@pytest.fixture
async def registry_basic(make_registry: ClientFactory, tmp_path: Path) -> RegistryClient:
    users = tmp_path / "htpasswd"
    users.write_text(format_htpasswd_line("testuser", "testpassword", cost=4) + "\n")
    return await make_registry(
        {
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": str(users),
        }
    )


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xff\xfe:\xe9",  # raw non-ASCII bytes where base64 belongs
        b"Basic " + base64.b64encode(b"\xff\xfe:pw"),  # base64 of non-UTF-8
        b"Basic " + base64.b64encode(b"no-colon"),
        b"Basic Og==",  # empty user and password: no credentials
        b"Basic",
        b"Negotiate abc",
    ],
)
async def test_malformed_basic_credentials_are_challenged(
    registry_basic: RegistryClient, authorization: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        reply = await get_v2(registry_basic, authorization)
    assert_error(reply, 401, "UNAUTHORIZED")
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="realm"'
    assert_no_errors_logged(caplog)
