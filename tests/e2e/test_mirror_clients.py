"""Real clients pulling through the pull-through cache, as docs/mirror.md sets them up.

- The Docker engine with ``--registry-mirror`` pulls a Docker Hub name (``hello``, i.e.
  ``docker.io/library/hello``) through a registry:2-style single-upstream mirror.
  docker.io is unreachable here, so a pull that works came through the mirror.
- containerd's ``ctr`` with a ``hosts.toml`` mirror and skopeo pull through a mirror of
  several upstreams, each under its prefix.

The upstream is portside's own open registry in a child process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.clients import docker_client, output, skopeo_client
from tests.support.docker_engine import DockerEngine, engine_for_session, start_docker_engine
from tests.support.oci import Image, make_image, read_oci_layout
from tests.support.portside_servers import ServerProcess, filesystem_registry, free_port
from tests.support.tools import isolated_client_env, require_tool
from tests.support.upstreams import push_image


@dataclass
class Setup:
    upstream: ServerProcess
    mirror_port: int
    image: Image


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("mirror-upstream")
    upstream = filesystem_registry(directory, REGISTRY_LOG_LEVEL="error")
    upstream.start()
    image = make_image(layer_count=2, layer_size=64 * 1024, seed="e2e-mirror")

    async def publish() -> None:
        async with aiohttp.ClientSession() as session:
            for name in ("library/hello", "tools/hello"):
                await push_image(session, upstream.url, name, "v1", image)

    try:
        asyncio.run(publish())
        yield Setup(upstream, free_port(), image)
    finally:
        upstream.stop()


def mirror_process(directory: Path, port: int, **settings: str) -> ServerProcess:
    server = filesystem_registry(directory, REGISTRY_LOG_LEVEL="error", **settings)
    # Listen on the port the engine was told about before it started.
    server.port = port
    server.env["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{port}"
    return server


@pytest.fixture(scope="module")
def mirrored_engine(setup: Setup) -> Iterator[DockerEngine]:
    def start(dockerd: str, directory: Path) -> DockerEngine:
        option = f"--registry-mirror=http://127.0.0.1:{setup.mirror_port}"
        return start_docker_engine(dockerd, directory, extra_options=[option])

    yield from engine_for_session("portside-mirror-", start)


def test_docker_pulls_a_hub_name_through_registry_mirrors(
    setup: Setup, mirrored_engine: DockerEngine, tmp_path: Path
) -> None:
    mirror = mirror_process(
        tmp_path, setup.mirror_port, REGISTRY_PROXY_REMOTEURL=setup.upstream.url
    )
    mirror.start()
    try:
        docker = docker_client(
            require_tool("docker", "docker.io"), mirrored_engine.client_env(tmp_path / "home")
        )
        pulled = docker.run("pull", "hello:v1")
        assert pulled.returncode == 0, output(pulled) + mirrored_engine.log_tail()
        inspected = json.loads(docker.ok("image", "inspect", "hello:v1"))
        diff_ids = json.loads(setup.image.config)["rootfs"]["diff_ids"]
        assert inspected[0]["RootFS"]["Layers"] == diff_ids
        # Served from the cache with the upstream's content cached: push is refused.
        docker.ok("tag", "hello:v1", f"127.0.0.1:{setup.mirror_port}/library/hello:v2")
        pushed = docker.run("push", f"127.0.0.1:{setup.mirror_port}/library/hello:v2")
        assert pushed.returncode != 0
        assert "unsupported" in output(pushed).lower(), output(pushed)
    finally:
        mirror.stop()


@pytest.fixture
def many_upstreams_mirror(setup: Setup, tmp_path: Path) -> Iterator[ServerProcess]:
    upstreams = [
        {"prefix": "hub", "remoteurl": setup.upstream.url, "library": True},
        {"prefix": "ghcr", "remoteurl": setup.upstream.url},
    ]
    mirror = filesystem_registry(
        tmp_path, REGISTRY_LOG_LEVEL="error", REGISTRY_PROXY_UPSTREAMS=json.dumps(upstreams)
    )
    mirror.start()
    try:
        yield mirror
    finally:
        mirror.stop()


@pytest.fixture
async def containerd(mirrored_engine: DockerEngine) -> AsyncIterator[str]:
    """The socket of the containerd the Docker engine runs (ctr needs a daemon)."""
    socket = mirrored_engine.directory / "exec" / "containerd" / "containerd.sock"
    if not socket.exists():
        pytest.skip(f"the engine's containerd socket is not at {socket}")
    yield str(socket)


async def test_ctr_pulls_through_a_hosts_toml_mirror(
    setup: Setup, many_upstreams_mirror: ServerProcess, containerd: str, tmp_path: Path
) -> None:
    ctr = require_tool("ctr", "containerd")
    hosts = Path(tempfile.mkdtemp(prefix="portside-hosts-"))
    try:
        # docs/mirror.md: ghcr.example's images come from the mirror's ghcr/ prefix.
        (hosts / "ghcr.example").mkdir()
        (hosts / "ghcr.example" / "hosts.toml").write_text(
            'server = "https://ghcr.example"\n\n'
            f'[host."{many_upstreams_mirror.url}/v2/ghcr"]\n'
            '  capabilities = ["pull", "resolve"]\n'
            "  override_path = true\n"
        )
        process = await asyncio.create_subprocess_exec(
            ctr,
            "--address",
            containerd,
            "--namespace",
            "portside-mirror-test",
            "images",
            "pull",
            "--hosts-dir",
            str(hosts),
            "ghcr.example/tools/hello:v1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, out.decode(errors="replace")
        text = out.decode(errors="replace")
        assert "manifest-" + setup.image.manifest_digest in text, text
        for digest in setup.image.blobs:
            assert digest.split(":")[1] in text, text
    finally:
        shutil.rmtree(hosts, ignore_errors=True)
        cleanup = await asyncio.create_subprocess_exec(
            ctr,
            "--address",
            containerd,
            "--namespace",
            "portside-mirror-test",
            "images",
            "rm",
            "ghcr.example/tools/hello:v1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await cleanup.wait()


def test_skopeo_copies_from_each_upstream_s_prefix(
    setup: Setup, many_upstreams_mirror: ServerProcess, tmp_path: Path
) -> None:
    skopeo = skopeo_client(require_tool("skopeo"), isolated_client_env(str(tmp_path)))
    for name in ("hub/hello", "ghcr/tools/hello"):
        target = tmp_path / name.replace("/", "-")
        skopeo.ok(
            "copy",
            "--src-tls-verify=false",
            f"docker://{many_upstreams_mirror.address}/{name}:v1",
            f"oci:{target}:v1",
        )
        blobs = read_oci_layout(target)
        assert setup.image.manifest_digest in blobs
        assert all(blobs[d] == data for d, data in setup.image.blobs.items())
