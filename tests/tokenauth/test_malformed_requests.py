"""Malformed requests from unauthenticated clients: a 400 or 401 with the JSON envelope,
one audit line for the decision, never a 500 with a traceback; ``Basic Og==`` is anonymous."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from tests.registry.helpers import Reply, error_codes, send_raw
from tests.tokenauth.conftest import SERVICE, Setup, TokenClient, granted
from tests.tokenauth.test_audit import audit_lines


def _b64url(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


KID_LIST_TOKEN = _b64url({"alg": "ES256", "kid": ["a"], "typ": "refresh+jwt"}) + ".e30.AA"


def assert_refused(
    reply_status: int, body: dict[str, Any], status: int, caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    """The status, the envelope, no error logged, and exactly one audit line (returned)."""
    assert reply_status == status, body
    assert body["errors"][0]["code"] in ("INVALID_REQUEST", "UNAUTHORIZED"), body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    (line,) = audit_lines(caplog)
    assert line["outcome"] != "granted"
    return line


async def test_refresh_token_with_a_list_kid_is_an_audited_401(
    client: TokenClient, caplog: pytest.LogCaptureFixture
) -> None:
    form = {"grant_type": "refresh_token", "client_id": "t", "service": SERVICE}
    with caplog.at_level(logging.INFO):
        async with client.post("/auth", data={**form, "refresh_token": KID_LIST_TOKEN}) as r:
            line = assert_refused(r.status, await r.json(), 401, caplog)
    assert line["grant"] == "refresh_token" and line["outcome"] == "unauthorized"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=zz", b"--xx\r\ngarbage"),
        ("multipart/form-data", b"no boundary at all"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data\r\n\r\nx"),
        ("application/x-www-form-urlencoded; charset=no-such-charset", b"grant_type=password"),
        ("application/x-www-form-urlencoded", b"grant_type=\xff\xfe"),
    ],
)
async def test_unreadable_form_is_an_audited_400(
    client: TokenClient, caplog: pytest.LogCaptureFixture, content_type: str, body: bytes
) -> None:
    with caplog.at_level(logging.INFO):
        async with client.post("/auth", data=body, headers={"Content-Type": content_type}) as r:
            reply = await r.json()
            line = assert_refused(r.status, reply, 400, caplog)
    assert reply["error"] == "invalid_request"
    assert line["reason"] == "malformed form body"


async def get_auth(client: TokenClient, authorization: bytes) -> Reply:
    """``GET /auth`` with the header's exact bytes, however undecodable."""
    head = f"GET /auth?service={SERVICE}&scope=repository:public/x:pull HTTP/1.1\r\n".encode()
    head += b"Host: localhost\r\nConnection: close\r\nAuthorization: " + authorization
    (reply,) = await send_raw(client, head + b"\r\n\r\n")
    return reply


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xff\xfe:\xe9",
        b"Basic " + base64.b64encode(b"\xff:pw"),
        b"Basic " + base64.b64encode(b"no-colon"),
        b"Bearer \xff",
        b"Negotiate abc",
    ],
)
async def test_malformed_basic_credentials_are_an_audited_401(
    client: TokenClient, caplog: pytest.LogCaptureFixture, authorization: bytes
) -> None:
    with caplog.at_level(logging.INFO):
        reply = await get_auth(client, authorization)
        assert error_codes(reply) == ["UNAUTHORIZED"]
        line = assert_refused(reply.status, reply.json(), 401, caplog)
    assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert line["grant"] == "basic"


async def test_empty_basic_credentials_are_anonymous(
    client: TokenClient, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        reply = await get_auth(client, b"Basic Og==")
    assert reply.status == 200, reply
    # The ACL lets everyone, anonymous included, pull public/*.
    assert granted(setup, reply.json()) == {"repository:public/x": ("pull",)}
    assert setup.verify(reply.json()["token"]).subject == ""
    (line,) = audit_lines(caplog)
    assert line["grant"] == "anonymous" and line["outcome"] == "granted"
