"""podman and skopeo against portside in token mode: the same round as with docker.

alice logs in, pushes and pulls her image back unchanged; bob pulls it but his push to
``alice/*`` is denied; an anonymous copy of alice's image and a wrong password are refused.
Neither client needs the Docker engine.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import ClientFactory
from tests.support.clients import CommandLine, output, write_rootfs_tarball
from tests.support.deployments import PASSWORDS, TokenDeployment
from tests.support.oci import make_image, read_oci_layout, write_oci_layout

DENIED = "denied: requested access to the resource is denied"
PLAIN_HTTP = "--tls-verify=false"


def login(client: CommandLine, deployment: TokenDeployment, user: str) -> None:
    result = client.login(deployment.registry.address, user, PASSWORDS[user], PLAIN_HTTP)
    assert result.returncode == 0, output(result)
    assert "Login Succeeded" in result.stdout


def podman_image(podman: CommandLine, reference: str) -> dict[str, object]:
    shown = json.loads(podman.ok("image", "inspect", reference))
    assert isinstance(shown, list) and isinstance(shown[0], dict)
    return shown[0]


def test_podman_login_push_pull_and_denial(
    token_deployment: TokenDeployment, podman_as: ClientFactory, tmp_path: Path
) -> None:
    alice, bob = podman_as("alice"), podman_as("bob")
    registry = token_deployment.registry.address
    reference = f"{registry}/alice/podman:1"
    login(alice, token_deployment, "alice")
    tarball = write_rootfs_tarball(tmp_path / "rootfs.tar.gz", "podman")
    alice.ok("import", str(tarball), reference)
    original = podman_image(alice, reference)["Id"]

    digest_file = tmp_path / "pushed.digest"
    alice.ok("push", PLAIN_HTTP, f"--digestfile={digest_file}", reference)
    digest = digest_file.read_text().strip()
    assert digest.startswith("sha256:")
    alice.ok("rmi", reference)
    assert alice.run("image", "exists", reference).returncode == 1

    alice.ok("pull", PLAIN_HTTP, reference)
    pulled = podman_image(alice, reference)
    assert pulled["Id"] == original
    assert pulled["Digest"] == digest
    alice.ok("rmi", reference)

    login(bob, token_deployment, "bob")
    bob.ok("pull", PLAIN_HTTP, reference)
    assert podman_image(bob, reference)["Id"] == original
    bob.ok("tag", reference, f"{registry}/alice/podman:v2")
    denied = bob.run("push", PLAIN_HTTP, f"{registry}/alice/podman:v2")
    assert denied.returncode != 0
    assert DENIED in output(denied)

    wrong = podman_as("mallory").login(registry, "bob", "not-" + PASSWORDS["bob"], PLAIN_HTTP)
    assert wrong.returncode != 0
    assert "invalid username/password" in output(wrong)
    assert not (tmp_path / "mallory" / "auth.json").exists()


def test_skopeo_copy_push_pull_and_denial(
    token_deployment: TokenDeployment, skopeo_as: ClientFactory, tmp_path: Path
) -> None:
    alice, bob, anonymous = skopeo_as("alice"), skopeo_as("bob"), skopeo_as("anonymous")
    image = make_image(layer_count=2, layer_size=32 * 1024, seed="skopeo-token")
    source = tmp_path / "source"
    write_oci_layout(source, image, tag="v1")
    registry = token_deployment.registry.address
    target = f"docker://{registry}/alice/skopeo:v1"

    login(alice, token_deployment, "alice")
    alice.ok("copy", "--dest-tls-verify=false", f"oci:{source}:v1", target)

    login(bob, token_deployment, "bob")
    bob.ok("copy", "--src-tls-verify=false", target, f"oci:{tmp_path / 'pulled'}:v1")
    blobs = read_oci_layout(tmp_path / "pulled")
    assert blobs[image.manifest_digest] == image.manifest
    for digest, content in image.blobs.items():
        assert blobs[digest] == content, digest

    denied = bob.run(
        "copy", "--dest-tls-verify=false", f"oci:{source}:v1", f"docker://{registry}/alice/x:v1"
    )
    assert denied.returncode != 0
    assert DENIED in output(denied)

    refused = anonymous.run(
        "copy", "--src-tls-verify=false", target, f"oci:{tmp_path / 'anonymous'}:v1"
    )
    assert refused.returncode != 0
    assert "denied" in output(refused) or "unauthorized" in output(refused)
