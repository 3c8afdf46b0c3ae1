"""The scale-out compose deployment brought up whole, offline: every image it needs (the
registry and tokenauth, Redis from Debian's redis-server, S3 from Debian's Ceph as a
single-node RADOS Gateway) built from the repository on the local Debian base, then
``up -d``, ``docker login`` through tokenauth, push, pull, and the image's blobs found in
the gateway's bucket.

The test engine has no bridge, so the files are combined with the two host-networking
overrides, on free ports.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.compose_project import (
    compose_project,
    generate_secrets,
    new_project,
    secrets_of,
    wait_for_services,
)
from tests.deploy.conftest import BUILD_TIMEOUT_SECONDS
from tests.support.clients import CommandLine, write_rootfs_tarball
from tests.support.portside_servers import free_port

FILES = (
    "docker-compose.yml",
    "docker-compose.hostnet.yml",
    "docker-compose.scaleout.yml",
    "docker-compose.scaleout-hostnet.yml",
)
BUCKET_TIMEOUT_SECONDS = 240.0  # the gateway builds a Ceph cluster before it answers


@pytest.fixture
def scaleout(docker: CommandLine, portside_image: str, tmp_path: Path) -> Iterator[CommandLine]:
    """docker-compose on the four files, a project of its own, images tagged for it;
    ``down -v --rmi local`` at the end removes containers, volumes and what it built."""
    redis_port, rgw_port = free_port(), free_port()
    project = new_project("portside-scaleout")
    extra = {
        "PORTSIDE_REDIS_IMAGE": f"{project}-redis:test",
        "PORTSIDE_S3_IMAGE": f"{project}-s3:test",
        "REDIS_PORT": str(redis_port),
        "REDIS_ADDR": f"127.0.0.1:{redis_port}",
        "RGW_PORT": str(rgw_port),
        "S3_ENDPOINT": f"http://127.0.0.1:{rgw_port}",
    }
    command = compose_project(
        docker, portside_image, tmp_path, project=project, files=FILES, extra=extra
    )
    yield command
    command.run("down", "-v", "--timeout", "10")
    for image in (extra["PORTSIDE_REDIS_IMAGE"], extra["PORTSIDE_S3_IMAGE"]):
        docker.run("rmi", image)


def build(compose: CommandLine, *services: str) -> None:
    """``docker-compose build`` (installing Ceph in an image takes minutes, not seconds)."""
    completed = subprocess.run(
        [compose.program, *compose.options, "build", *services],
        env=dict(compose.env),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def wait_for_exit(docker: CommandLine, container: str, timeout: float) -> int:
    """The exit code of a one-shot container, once it has stopped for good."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = docker.ok("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container)
        status, code = state.split()
        if status == "exited":
            return int(code)
        time.sleep(1)
    logs = docker.run("logs", container)
    raise AssertionError(f"{container} still running after {timeout}s:\n{logs.stdout}{logs.stderr}")


def test_scaleout_deployment_comes_up_and_stores_pushes_in_rgw(
    docker: CommandLine, scaleout: CommandLine, tmp_path: Path
) -> None:
    password = generate_secrets(scaleout)
    registry = scaleout.env["REGISTRY_ADDR"]
    reference = f"{registry}/team/scaled:1"

    build(scaleout, "redis", "s3")  # registry and tokenauth: the session's portside image
    scaleout.ok("up", "-d")
    bucket = scaleout.ok("ps", "-q", "s3-bucket").strip()
    code = wait_for_exit(docker, bucket, BUCKET_TIMEOUT_SECONDS)
    assert code == 0, docker.run("logs", bucket).stdout
    wait_for_services(docker, scaleout)

    assert docker.login(registry, "admin", password).returncode == 0
    docker.ok("import", str(write_rootfs_tarball(tmp_path / "rootfs.tar", "scaleout")), reference)
    docker.ok("push", reference)
    docker.ok("rmi", reference)
    docker.ok("pull", reference)

    # The layers are in the gateway's bucket (not in a volume of the registry's).
    keys = stored_keys(scaleout.env["S3_ENDPOINT"], secrets_of(scaleout) / "registry-s3.env")
    blobs = [k for k in keys if k.startswith("docker/registry/v2/blobs/") and k.endswith("/data")]
    assert len(blobs) >= 2, keys  # a layer and the image's config
    assert any("/repositories/team/scaled/_manifests/tags/1/" in k for k in keys), keys


def stored_keys(endpoint: str, env_file: Path) -> list[str]:
    """Every key in the bucket ``registry``, with the registry's own S3 keys."""
    import botocore.session

    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    client = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=settings["REGISTRY_STORAGE_S3_ACCESSKEY"],
        aws_secret_access_key=settings["REGISTRY_STORAGE_S3_SECRETKEY"],
    )
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="registry")
        return [item["Key"] for page in pages for item in page.get("Contents", [])]
    finally:
        client.close()
