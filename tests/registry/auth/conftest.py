"""A token-mode registry and a signer it trusts, shared by the token tests."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.scope import Scope
from shared.token import Claims, TokenSigner
from tests.registry.conftest import ClientFactory, RegistryClient
from tokenauth.keygen import certificate_pem, generate_key, self_signed_certificate

SERVICE = "registry.test"
ISSUER = "test-issuer"
REALM = "https://auth.example.test/token"


def token(
    signer: TokenSigner,
    *scopes: str,
    audience: str = SERVICE,
    lifetime: timedelta = timedelta(minutes=5),
    now: int | None = None,
) -> dict[str, str]:
    """The ``Authorization`` header of a token for ``scopes`` signed by ``signer``."""
    access = []
    for text in scopes:
        type_, name, actions = text.split(":")
        access.append(Scope.of(type_, name, actions.split(",")))
    claims = Claims.issue(
        issuer=ISSUER,
        subject="alice",
        audience=audience,
        lifetime=lifetime,
        access=access,
        now=now,
    )
    return {"Authorization": f"Bearer {signer.sign(claims)}"}


def token_environ(bundle: Path, **extra: str) -> dict[str, str]:
    """The environment of a token-mode registry trusting the certificates in ``bundle``."""
    return {
        "REGISTRY_AUTH": "token",
        "REGISTRY_AUTH_TOKEN_REALM": REALM,
        "REGISTRY_AUTH_TOKEN_SERVICE": SERVICE,
        "REGISTRY_AUTH_TOKEN_ISSUER": ISSUER,
        "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": str(bundle),
        **extra,
    }


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    key = generate_key("ES256")
    return TokenSigner(key, [self_signed_certificate(key, "test signer")])


@pytest.fixture
async def registry_token(
    make_registry: ClientFactory, signer: TokenSigner, tmp_path: Path
) -> RegistryClient:
    """A registry in token mode whose rootcertbundle is ``signer``'s certificate."""
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(certificate_pem(signer.chain[0]))
    return await make_registry(token_environ(bundle))
