"""portside's container image, driven as the deployment guide drives ``registry:2``:
the ``htpasswd`` entry point, then a domain registry with a TLS bundle, native basic auth
and a bind-mounted data volume configured only by ``REGISTRY_*`` variables; push, pull,
and the data surviving a new container.

Containers use ``--network host`` (the test engine runs with ``--bridge=none``, so
``-p 5000:5000`` has nothing to map) and a free port in ``REGISTRY_HTTP_ADDR``.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import bcrypt

from tests.deploy.containers import give_to_image_user, wait_for_http, wait_for_https
from tests.deploy.https import client_context
from tests.deploy.pki import Pki
from tests.support.clients import CommandLine, write_rootfs_tarball
from tests.support.portside_servers import free_port


def test_htpasswd_entrypoint_prints_a_bcrypt_line(docker: CommandLine, portside_image: str) -> None:
    line = docker.ok(
        "run",
        "--rm",
        "--entrypoint",
        "htpasswd",
        portside_image,
        "-Bbn",
        "testuser",
        "testpassword",
    )
    user, _, hashed = line.strip().partition(":")
    assert user == "testuser"
    assert hashed.startswith("$2")
    assert bcrypt.checkpw(b"testpassword", hashed.encode())
    assert not bcrypt.checkpw(b"wrongpassword", hashed.encode())


def test_the_image_runs_as_a_user_not_root(docker: CommandLine, portside_image: str) -> None:
    assert docker.ok("run", "--rm", "--entrypoint", "id", portside_image, "-u").strip() != "0"
    config = docker.ok(
        "run", "--rm", "--entrypoint", "cat", portside_image, "/etc/docker/registry/config.yml"
    )
    assert "rootdirectory: /var/lib/registry" in config


def run_registry(docker: CommandLine, image: str, directory: Path, port: int) -> str:
    """The guide's ``docker run`` for basic auth with TLS, on the host network."""
    return docker.ok(
        "run", "-d", "--name", "registry", "--network", "host",
        "-v", f"{directory / 'data'}:/var/lib/registry",
        "-v", f"{directory / 'auth'}:/auth",
        "-e", "REGISTRY_AUTH=htpasswd",
        "-e", "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm",
        "-e", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
        "-v", f"{directory / 'certs'}:/certs",
        "-e", "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt",
        "-e", "REGISTRY_HTTP_TLS_KEY=/certs/domain.key",
        "-e", f"REGISTRY_HTTP_ADDR=127.0.0.1:{port}",
        image,
    ).strip()  # fmt: skip


def test_domain_registry_with_tls_basic_auth_and_a_data_volume(
    docker: CommandLine, portside_image: str, tmp_path: Path
) -> None:
    pki = Pki.create()
    pki.write_bundle(tmp_path / "certs")  # leaf + intermediate, as the guide's `cat`
    trust_root_only = client_context(pki.write_root(tmp_path / "root.crt"))
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "htpasswd").write_text(
        docker.ok(
            "run", "--entrypoint", "htpasswd", portside_image, "-Bbn", "testuser", "testpassword"
        )
    )
    (tmp_path / "data").mkdir()
    give_to_image_user(tmp_path / "certs", tmp_path / "auth", tmp_path / "data")
    port = free_port()
    registry = f"127.0.0.1:{port}"

    run_registry(docker, portside_image, tmp_path, port)
    try:
        wait_for_https(docker, "registry", port, trust_root_only)
        connection = http.client.HTTPSConnection(
            "localhost", port, timeout=5, context=trust_root_only
        )
        connection.request("GET", "/v2/")
        response = connection.getresponse()
        assert response.status == 401
        assert response.getheader("WWW-Authenticate") == 'Basic realm="Registry Realm"'
        connection.close()

        assert docker.run("push", f"{registry}/nothing:1").returncode != 0
        assert docker.login(registry, "testuser", "wrong").returncode != 0
        assert docker.login(registry, "testuser", "testpassword").returncode == 0
        tarball = write_rootfs_tarball(tmp_path / "rootfs.tar", "image-test")
        docker.ok("import", str(tarball), f"{registry}/myfirstimage:1")
        docker.ok("push", f"{registry}/myfirstimage:1")
        assert (tmp_path / "data/docker/registry/v2/repositories/myfirstimage").is_dir()
    finally:
        # The guide's `docker stop registry && docker rm -v registry`.
        docker.ok("stop", "registry")
        docker.ok("rm", "-v", "registry")

    # A new container on the same data directory serves what the first one stored.
    docker.ok("rmi", f"{registry}/myfirstimage:1")
    run_registry(docker, portside_image, tmp_path, port)
    try:
        wait_for_https(docker, "registry", port, trust_root_only)
        docker.ok("pull", f"{registry}/myfirstimage:1")
        docker.ok("logout", registry)
        docker.ok("rmi", f"{registry}/myfirstimage:1")
        assert docker.run("pull", f"{registry}/myfirstimage:1").returncode != 0  # logged out
    finally:
        docker.ok("rm", "-f", "-v", "registry")


def test_localhost_registry_with_a_data_directory(
    docker: CommandLine, portside_image: str, tmp_path: Path
) -> None:
    """The guide's first steps: a plain-HTTP registry on localhost, data in ./data."""
    data = tmp_path / "data"
    data.mkdir()
    give_to_image_user(data)
    port = free_port()
    registry = f"localhost:{port}"
    docker.ok(
        "run", "-d", "--network", "host", "--restart=always", "--name", "registry",
        "-v", f"{data}:/var/lib/registry",
        "-e", f"REGISTRY_HTTP_ADDR=127.0.0.1:{port}",
        portside_image,
    )  # fmt: skip
    try:
        wait_for_http(docker, "registry", port)
        tarball = write_rootfs_tarball(tmp_path / "rootfs.tar", "localhost")
        docker.ok("import", str(tarball), "ubuntu")
        docker.ok("tag", "ubuntu", f"{registry}/ubuntu")
        docker.ok("push", f"{registry}/ubuntu")
        docker.ok("rmi", f"{registry}/ubuntu")
        docker.ok("pull", f"{registry}/ubuntu")
        assert (data / "docker/registry/v2/repositories/ubuntu").is_dir()
    finally:
        docker.ok("stop", "registry")
        docker.ok("rm", "-v", "registry")
