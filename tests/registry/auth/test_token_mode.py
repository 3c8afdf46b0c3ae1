"""``auth: token`` against real signed tokens: challenges name exactly the access a request
needs, tokens are verified in full, and scopes decide what a caller may do."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from shared.jose_keys import libtrust_key_id
from shared.token import Claims, TokenSigner
from tests.registry.auth.conftest import ISSUER, REALM, SERVICE, token, token_environ
from tests.registry.conftest import ClientFactory, RegistryClient
from tokenauth.keygen import certificate_pem, generate_key, self_signed_certificate

DATA = b"layer bytes"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def challenge(response_headers: object) -> str:
    header = response_headers["WWW-Authenticate"]  # type: ignore[index]
    assert isinstance(header, str)
    return header


async def test_base_endpoint_challenges_without_scope(registry_token: RegistryClient) -> None:
    response = await registry_token.get("/v2/")
    assert response.status == 401
    assert challenge(response.headers) == f'Bearer realm="{REALM}",service="{SERVICE}"'
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert (await response.json())["errors"][0]["code"] == "UNAUTHORIZED"
    assert (await registry_token.get("/")).status == 200


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v2/alice/app/manifests/v1", "repository:alice/app:pull"),
        ("HEAD", f"/v2/alice/app/blobs/{DIGEST}", "repository:alice/app:pull"),
        ("POST", "/v2/alice/app/blobs/uploads/", "repository:alice/app:pull,push"),
        ("PUT", "/v2/alice/app/manifests/v1", "repository:alice/app:pull,push"),
        ("DELETE", "/v2/alice/app/manifests/v1", "repository:alice/app:delete"),
        ("GET", "/v2/_catalog", "registry:catalog:*"),
    ],
)
async def test_challenges_name_the_needed_scope(
    registry_token: RegistryClient, method: str, path: str, scope: str
) -> None:
    response = await registry_token.request(method, path)
    assert response.status == 401
    assert challenge(response.headers) == (
        f'Bearer realm="{REALM}",service="{SERVICE}",scope="{scope}"'
    )


async def test_push_with_push_scope_and_pull_only_is_denied(
    registry_token: RegistryClient, signer: TokenSigner
) -> None:
    pusher = token(signer, "repository:alice/app:pull,push")
    pushed = await registry_token.post(
        "/v2/alice/app/blobs/uploads/", params={"digest": DIGEST}, data=DATA, headers=pusher
    )
    assert pushed.status == 201
    reader = token(signer, "repository:alice/app:pull")
    fetched = await registry_token.get(f"/v2/alice/app/blobs/{DIGEST}", headers=reader)
    assert await fetched.read() == DATA
    denied = await registry_token.post("/v2/alice/app/blobs/uploads/", headers=reader)
    assert denied.status == 401
    assert 'error="insufficient_scope"' in challenge(denied.headers)
    assert (await denied.json())["errors"][0]["code"] == "DENIED"
    other = await registry_token.get(f"/v2/bob/app/blobs/{DIGEST}", headers=reader)
    assert other.status == 401


async def test_mount_needs_pull_on_the_source(
    registry_token: RegistryClient, signer: TokenSigner
) -> None:
    await registry_token.post(
        "/v2/alice/app/blobs/uploads/",
        params={"digest": DIGEST},
        data=DATA,
        headers=token(signer, "repository:alice/app:pull,push"),
    )
    mount = {"mount": DIGEST, "from": "alice/app"}
    without = token(signer, "repository:bob/app:pull,push")
    fallback = await registry_token.post(
        "/v2/bob/app/blobs/uploads/", params=mount, headers=without
    )
    assert fallback.status == 202  # an ordinary upload: no access to alice/app's blob
    both = token(signer, "repository:bob/app:pull,push", "repository:alice/app:pull")
    mounted = await registry_token.post("/v2/bob/app/blobs/uploads/", params=mount, headers=both)
    assert mounted.status == 201
    unauthenticated = await registry_token.post("/v2/bob/app/blobs/uploads/", params=mount)
    assert 'scope="repository:bob/app:pull,push repository:alice/app:pull"' in challenge(
        unauthenticated.headers
    )


async def test_catalog_needs_the_catalog_scope(
    registry_token: RegistryClient, signer: TokenSigner
) -> None:
    denied = await registry_token.get(
        "/v2/_catalog", headers=token(signer, "repository:alice/app:*")
    )
    assert denied.status == 401
    allowed = await registry_token.get("/v2/_catalog", headers=token(signer, "registry:catalog:*"))
    assert allowed.status == 200


async def test_bad_tokens_are_invalid(registry_token: RegistryClient, signer: TokenSigner) -> None:
    stranger_key = generate_key("ES256")
    stranger = TokenSigner(stranger_key, [self_signed_certificate(stranger_key, "stranger")])
    past = 1_000_000_000
    cases = {
        "another key": token(stranger, "repository:alice/app:pull"),
        "expired": token(signer, "repository:alice/app:pull", now=past),
        "another service": token(signer, "repository:alice/app:pull", audience="elsewhere"),
        "garbage": {"Authorization": "Bearer not.a.token"},
        "alg none": {"Authorization": "Bearer " + _unsigned("repository:alice/app:pull")},
        "hmac with the public key": {"Authorization": "Bearer " + _hmac_confusion(signer)},
    }
    for label, headers in cases.items():
        response = await registry_token.get("/v2/alice/app/tags/list", headers=headers)
        assert response.status == 401, label
        assert 'error="invalid_token"' in challenge(response.headers), label


async def test_jwks_trusts_keys_by_kid(
    make_registry: ClientFactory, signer: TokenSigner, tmp_path: Path
) -> None:
    jwks = tmp_path / "keys.jwks"
    jwks.write_text(json.dumps(signer.jwks()))
    client = await make_registry(
        {
            "REGISTRY_AUTH": "token",
            "REGISTRY_AUTH_TOKEN_REALM": REALM,
            "REGISTRY_AUTH_TOKEN_SERVICE": SERVICE,
            "REGISTRY_AUTH_TOKEN_ISSUER": ISSUER,
            "REGISTRY_AUTH_TOKEN_JWKS": str(jwks),
        }
    )
    response = await client.get("/v2/", headers=token(signer))
    assert response.status == 200


async def test_a_libtrust_kid_without_x5c_is_trusted(
    make_registry: ClientFactory, signer: TokenSigner, tmp_path: Path
) -> None:
    """docker_auth and Harbor name the key by its libtrust fingerprint and send no chain."""
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(certificate_pem(signer.chain[0]))
    client = await make_registry(token_environ(bundle))
    claims = Claims.issue(
        issuer=ISSUER, subject="harbor", audience=SERVICE, lifetime=timedelta(minutes=5)
    )
    encoded = jwt.encode(
        claims.to_payload(),
        signer.key,
        "ES256",
        {"typ": "JWT", "kid": libtrust_key_id(signer.public_key)},
    )
    response = await client.get("/v2/", headers={"Authorization": f"Bearer {encoded}"})
    assert response.status == 200


async def test_signing_algorithms_limit_what_is_accepted(
    make_registry: ClientFactory, signer: TokenSigner, tmp_path: Path
) -> None:
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(certificate_pem(signer.chain[0]))
    client = await make_registry(
        token_environ(bundle, REGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS="[RS256]")
    )
    response = await client.get("/v2/", headers=token(signer))  # an ES256 token
    assert response.status == 401
    assert 'error="invalid_token"' in challenge(response.headers)


async def test_autoredirect_points_the_realm_at_this_host(
    make_registry: ClientFactory, signer: TokenSigner, tmp_path: Path
) -> None:
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(certificate_pem(signer.chain[0]))
    client = await make_registry(
        token_environ(
            bundle,
            REGISTRY_AUTH_TOKEN_AUTOREDIRECT="true",
            REGISTRY_AUTH_TOKEN_AUTOREDIRECTPATH="/auth/token/",
        )
    )
    response = await client.get(
        "/v2/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "reg.example.com"}
    )
    assert challenge(response.headers).startswith(
        'Bearer realm="https://reg.example.com/auth/token/"'
    )


def _claims(scope: str) -> dict[str, object]:
    type_, name, actions = scope.split(":")
    return {
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": "mallory",
        "exp": 4_000_000_000,
        "access": [{"type": type_, "name": name, "actions": actions.split(",")}],
    }


def _unsigned(scope: str) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(_claims(scope))}."


def _hmac_confusion(signer: TokenSigner) -> str:
    """A token "signed" with HS256 using the public certificate as the secret."""
    secret = certificate_pem(signer.chain[0])
    header = {"kid": signer.kid, "typ": "JWT"}
    claims = _claims("repository:alice/app:*")
    signing_input = (
        base64.urlsafe_b64encode(json.dumps({"alg": "HS256", **header}).encode()).rstrip(b"=")
        + b"."
        + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    )
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


async def test_a_changed_bundle_is_taken_without_a_restart(
    make_registry: ClientFactory, signer: TokenSigner, tmp_path: Path
) -> None:
    """A key rotation hands the registry a new rootcertbundle: it is re-read within about
    a second, and a key taken out stops working even for a token already remembered."""
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(certificate_pem(signer.chain[0]))
    client = await make_registry(token_environ(bundle))
    key = generate_key("ES256")
    rotated = TokenSigner(key, [self_signed_certificate(key, "the next key")])
    old = token(signer)
    assert (await client.get("/v2/", headers=old)).status == 200  # remembered from now on
    assert (await client.get("/v2/", headers=token(rotated))).status == 401
    bundle.write_bytes(certificate_pem(rotated.chain[0]))  # the old key out, the new one in
    deadline = time.monotonic() + 20
    while (await client.get("/v2/", headers=token(rotated))).status != 200:
        assert time.monotonic() < deadline, "the new bundle was never read"
        await asyncio.sleep(0.2)
    assert (await client.get("/v2/", headers=old)).status == 401
    # A broken bundle leaves the keys in force.
    bundle.write_text("not a certificate")
    await asyncio.sleep(1.5)
    assert (await client.get("/v2/", headers=token(rotated))).status == 200
