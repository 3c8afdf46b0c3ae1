"""Fixtures for the end-to-end scenarios: one real Docker engine per test session, one
portside deployment (registry, and tokenauth in token mode) per test module, and the
docker, podman and skopeo clients with credentials isolated per test and per user.

A missing tool or an engine that cannot start skips the tests that need it with a message
naming what is missing, except under ``CI=true``, where that fails the run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import CommandLine, docker_client, podman_client, skopeo_client
from tests.support.deployments import (
    HtpasswdDeployment,
    TokenDeployment,
    start_htpasswd_deployment,
    start_token_deployment,
)
from tests.support.docker_engine import DockerEngine, engine_for_session, start_docker_engine
from tests.support.tools import isolated_client_env, require_tool

# A client for one user: the argument names the user, whose credentials live apart.
ClientFactory = Callable[[str], CommandLine]


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    yield from engine_for_session("portside-dockerd-", start_docker_engine)


@pytest.fixture(scope="module")
def token_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenDeployment]:
    deployment = start_token_deployment(tmp_path_factory.mktemp("token-deployment"))
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def htpasswd_deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HtpasswdDeployment]:
    deployment = start_htpasswd_deployment(tmp_path_factory.mktemp("htpasswd-deployment"))
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def docker_as(docker_engine: DockerEngine, tmp_path: Path) -> ClientFactory:
    """``docker_as("alice")``: the docker CLI with alice's own, initially empty, config."""
    docker = require_tool("docker", "docker.io")
    return lambda user: docker_client(docker, docker_engine.client_env(tmp_path / user))


@pytest.fixture
def podman_as(tmp_path: Path) -> Iterator[ClientFactory]:
    """``podman_as("bob")``: podman with bob's own auth file; all users of a test share one
    image store, as the users of one machine would."""
    podman = require_tool("podman")
    # podman refuses a runroot path longer than 50 characters: not under pytest's basetemp.
    storage = Path(tempfile.mkdtemp(prefix="portside-podman-"))
    try:
        yield lambda user: podman_client(podman, isolated_client_env(str(tmp_path / user)), storage)
    finally:
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture
def skopeo_as(tmp_path: Path) -> ClientFactory:
    skopeo = require_tool("skopeo")
    return lambda user: skopeo_client(skopeo, isolated_client_env(str(tmp_path / user)))
