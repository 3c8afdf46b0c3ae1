"""Fixtures that run the real tokenauth app on loopback with files written to tmp."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509

from shared.htpasswd import format_htpasswd_line
from shared.jose_keys import PrivateKey
from shared.token import Claims, TokenVerifier
from tokenauth.app import create_app
from tokenauth.config import load_config
from tokenauth.keygen import certificate_pem, generate_key, key_pem, self_signed_certificate

TokenClient = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[TokenClient]]

SERVICE = "registry.test"
OTHER_SERVICE = "other.test"
ISSUER = "portside-test-issuer"
REALM = "portside-test"
USERS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw", "ci": "ci-pw"}

# The examples of docs/tokenauth.md.
ACL = """\
acl:
  - match: {account: admin}
    actions: ["*"]
    comment: admin has everything, including registry:catalog:*
  - match: {account: ci, name: "ci/*"}
    actions: [pull, push]
    comment: the CI user may push only to ci/*
  - match: {account: "/.+/", name: "${account}/*"}
    actions: ["*"]
    comment: each user owns their namespace
  - match: {name: "public/*"}
    actions: [pull]
    comment: everyone, even anonymous, may pull public/*
"""

CONFIG = f"""\
http:
  addr: 127.0.0.1:0
  realm: {REALM}
token:
  issuer: {ISSUER}
  services: [{SERVICE}, {OTHER_SERVICE}]
  key: token.key
  certificate: token.crt
users: [users.htpasswd]
acl: acl.yml
"""


@dataclass
class Setup:
    """A tokenauth deployment directory: config, key, certificate, users and ACL files."""

    directory: Path
    key: PrivateKey
    cert: x509.Certificate

    @property
    def config(self) -> Path:
        return self.directory / "tokenauth.yml"

    @property
    def users_file(self) -> Path:
        return self.directory / "users.htpasswd"

    @property
    def acl_file(self) -> Path:
        return self.directory / "acl.yml"

    def write_users(self, users: Mapping[str, str]) -> None:
        lines = [format_htpasswd_line(user, password, cost=4) for user, password in users.items()]
        self.users_file.write_text("\n".join(lines) + "\n")

    def verifier(self, service: str = SERVICE) -> TokenVerifier:
        return TokenVerifier(issuer=ISSUER, audience=service, trusted_certs=[self.cert])

    def verify(self, token: str, service: str = SERVICE) -> Claims:
        return self.verifier(service).verify(token)


def write_setup(directory: Path) -> Setup:
    key = generate_key("ES256")
    cert = self_signed_certificate(key, "tokenauth test")
    (directory / "token.key").write_bytes(key_pem(key))
    (directory / "token.crt").write_bytes(certificate_pem(cert))
    setup = Setup(directory, key, cert)
    setup.write_users(USERS)
    setup.acl_file.write_text(ACL)
    setup.config.write_text(CONFIG)
    return setup


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return write_setup(tmp_path)


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[[web.Application], Awaitable[TokenClient]], setup: Setup
) -> ClientFactory:
    """Start tokenauth from the setup's config file plus ``TOKENAUTH_*`` ``overrides``."""

    async def start(overrides: Mapping[str, str] | None = None) -> TokenClient:
        config = load_config(setup.config, dict(overrides or {}))
        return await aiohttp_client(create_app(config))

    return start


@pytest.fixture
async def client(make_client: ClientFactory) -> TokenClient:
    return await make_client()


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def fetch_token(
    client: TokenClient,
    *scopes: str,
    auth: tuple[str, str] | None = None,
    service: str | None = SERVICE,
    **params: str,
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    """GET /auth as docker does; returns (status, JSON body, headers)."""
    query: list[tuple[str, str]] = [("scope", scope) for scope in scopes]
    if service is not None:
        query.append(("service", service))
    query.extend(params.items())
    headers = basic(*auth) if auth else {}
    async with client.get("/auth", params=query, headers=headers) as response:
        body = await response.json()
        return response.status, body, response.headers


def granted(setup: Setup, body: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``{"type:name": actions}`` of the verified token in a token response."""
    claims = setup.verify(body.get("token") or body["access_token"])
    return {f"{s.type}:{s.name}": s.actions for s in claims.access}
