"""The docker CLI and the real Docker engine against portside in token mode.

The registry sends ``docker login`` to tokenauth's realm; alice pushes and pulls her own
images back unchanged, bob may pull them but not push, anonymous clients may pull
``public/*`` but nothing of alice's, a wrong password fails the login, and tokens that are
forged, expired or meant for another service are refused with ``error="invalid_token"``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from shared.jose_keys import load_certificates
from shared.scope import Scope
from shared.token import Claims, TokenSigner, TokenVerifier
from tests.e2e.conftest import ClientFactory
from tests.support.clients import CommandLine, output, write_rootfs_tarball
from tests.support.deployments import ISSUER, PASSWORDS, SERVICE, TokenDeployment
from tokenauth.config import REFRESH_AUDIENCE_PREFIX
from tokenauth.keygen import generate_key, self_signed_certificate

DENIED = "denied: requested access to the resource is denied"


def import_image(docker: CommandLine, tmp_path: Path, reference: str) -> str:
    """Import a tiny root filesystem as ``reference``; the new image's id."""
    name = re.sub(r"[^a-z0-9]+", "-", reference) + ".tar.gz"
    tarball = write_rootfs_tarball(tmp_path / name, reference)
    docker.ok("import", str(tarball), reference)
    return image_id(docker, reference)


def image_id(docker: CommandLine, reference: str) -> str:
    return docker.ok("image", "inspect", "--format", "{{.Id}}", reference).strip()


def repo_digests(docker: CommandLine, reference: str) -> list[str]:
    shown = docker.ok("image", "inspect", "--format", "{{json .RepoDigests}}", reference)
    digests = json.loads(shown)
    assert isinstance(digests, list)
    return [str(d) for d in digests]


def push(docker: CommandLine, reference: str) -> str:
    """``docker push``; the manifest digest docker reports."""
    pushed = docker.ok("push", reference)
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert found, pushed
    return found.group(1)


def login(docker: CommandLine, deployment: TokenDeployment, user: str) -> None:
    result = docker.login(deployment.registry.address, user, PASSWORDS[user])
    assert result.returncode == 0, output(result)
    assert "Login Succeeded" in result.stdout


def test_login_goes_to_the_realm_and_an_image_comes_back_identical(
    token_deployment: TokenDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    alice = docker_as("alice")
    registry = token_deployment.registry.address
    login(alice, token_deployment, "alice")

    # The daemon followed the registry's challenge to tokenauth: the login left the refresh
    # token tokenauth signed for alice in alice's config, and tokenauth audited the login.
    config = json.loads((tmp_path / "alice" / ".docker" / "config.json").read_text())
    identity = config["auths"][registry]["identitytoken"]
    certificates = load_certificates((token_deployment.directory / "token.crt").read_bytes())
    refresh = TokenVerifier(
        issuer=ISSUER,
        audience=REFRESH_AUDIENCE_PREFIX + ISSUER,
        trusted_certs=certificates,
        token_type="refresh+jwt",
    ).verify(identity)
    assert refresh.subject == "alice"
    audit = [
        # The JSON object, then (text format) the line's key=value fields.
        json.JSONDecoder().raw_decode(line, line.index("{"))[0]
        for line in token_deployment.tokenauth.log().splitlines()
        if "tokenauth.audit" in line
    ]
    assert any(entry["account"] == "alice" and entry["client_id"] == "docker" for entry in audit), (
        audit
    )

    reference = f"{registry}/alice/app:1"
    original = import_image(alice, tmp_path, reference)
    digest = push(alice, reference)
    alice.ok("rmi", reference)
    assert alice.run("image", "inspect", reference).returncode != 0

    pulled = alice.ok("pull", reference)
    assert f"Digest: {digest}" in pulled
    assert image_id(alice, reference) == original
    assert repo_digests(alice, reference) == [f"{registry}/alice/app@{digest}"]

    # Neither server wrote a password or alice's refresh token to its log.
    for log in (token_deployment.tokenauth.log(), token_deployment.registry.log()):
        assert PASSWORDS["alice"] not in log
        assert identity not in log


def test_bob_pulls_alices_image_but_may_not_push_to_her_repository(
    token_deployment: TokenDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    alice, bob = docker_as("alice"), docker_as("bob")
    registry = token_deployment.registry.address
    reference = f"{registry}/alice/shared:1"
    login(alice, token_deployment, "alice")
    original = import_image(alice, tmp_path, reference)
    push(alice, reference)
    alice.ok("rmi", reference)

    login(bob, token_deployment, "bob")
    bob.ok("pull", reference)
    assert image_id(bob, reference) == original

    # Tag "v2": a path ending in /v2 once passed for the base endpoint and skipped the
    # scope check. The layers are there already, so only the manifest PUT is refused.
    bob.ok("tag", reference, f"{registry}/alice/shared:v2")
    denied = bob.run("push", f"{registry}/alice/shared:v2")
    assert denied.returncode != 0
    assert DENIED in output(denied)
    assert "Layer already exists" in output(denied)
    # Nothing was written: even alice finds no tag v2.
    missing = alice.run("pull", f"{registry}/alice/shared:v2")
    assert missing.returncode != 0
    assert "manifest unknown" in output(missing) or "not found" in output(missing)


def test_anonymous_pulls_public_images_but_not_alices(
    token_deployment: TokenDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    admin, alice, anonymous = docker_as("admin"), docker_as("alice"), docker_as("anonymous")
    registry = token_deployment.registry.address
    login(admin, token_deployment, "admin")
    public = f"{registry}/public/hello:1"
    original = import_image(admin, tmp_path, public)
    push(admin, public)
    login(alice, token_deployment, "alice")
    private = f"{registry}/alice/private:1"
    import_image(alice, tmp_path, private)
    push(alice, private)
    admin.ok("rmi", public, private)

    anonymous.ok("pull", public)
    assert image_id(anonymous, public) == original

    refused = anonymous.run("pull", private)
    assert refused.returncode != 0
    assert "pull access denied" in output(refused) and "denied" in output(refused)
    assert anonymous.run("image", "inspect", private).returncode != 0


def test_a_wrong_password_fails_docker_login(
    token_deployment: TokenDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    bob = docker_as("bob")
    registry = token_deployment.registry.address
    failed = bob.login(registry, "bob", "not-" + PASSWORDS["bob"])
    assert failed.returncode != 0
    assert "unauthorized" in output(failed).lower()
    config = tmp_path / "bob" / ".docker" / "config.json"
    assert not config.exists() or registry not in json.loads(config.read_text()).get("auths", {})


def signed(
    signer: TokenSigner,
    *,
    audience: str = SERVICE,
    now: int | None = None,
    lifetime: timedelta = timedelta(minutes=5),
) -> str:
    claims = Claims.issue(
        issuer=ISSUER,
        subject="alice",
        audience=audience,
        lifetime=lifetime,
        access=[Scope.of("repository", "alice/app", ["pull"])],
        now=now,
    )
    return signer.sign(claims)


def forge(case: str, own: TokenSigner) -> str:
    """A token the registry must refuse, for each way a token can be wrong."""
    if case == "signed-by-another-key":
        key = generate_key("ES256")
        return signed(TokenSigner(key, [self_signed_certificate(key, "not tokenauth")]))
    if case == "expired":
        return signed(own, now=int(time.time()) - 3600)
    assert case == "other-service"
    return signed(own, audience="another-registry")


@pytest.mark.parametrize("case", ["signed-by-another-key", "expired", "other-service"])
async def test_bad_tokens_get_an_invalid_token_challenge(
    token_deployment: TokenDeployment, case: str
) -> None:
    own = token_deployment.signer()
    url = f"{token_deployment.registry.url}/v2/alice/app/tags/list"
    expected = (
        f'Bearer realm="{token_deployment.realm}",service="{SERVICE}",'
        f'scope="repository:alice/app:pull",error="invalid_token"'
    )
    async with aiohttp.ClientSession() as session:
        # The same request with a good token passes the access check: the refusal below is
        # the token's fault, nothing else's.
        headers = {"Authorization": f"Bearer {signed(own)}"}
        async with session.get(url, headers=headers) as response:
            assert response.status != 401

        headers = {"Authorization": f"Bearer {forge(case, own)}"}
        async with session.get(url, headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == expected
            body = await response.json()
            assert body["errors"][0]["code"] == "UNAUTHORIZED"
