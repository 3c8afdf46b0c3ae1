"""portside keeps Distribution's on-disk layout exactly: the reference registry 2.8.2
serves what portside stored, and portside serves what the reference registry stored, from
one shared root directory — an operator can switch in either direction and keep every image.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from registry.app import create_app
from registry.config import load_config
from tests.support.oci import make_image, read_oci_layout, write_oci_layout
from tests.support.portside_servers import FILESYSTEM_CONFIG
from tests.support.tools import free_port, isolated_client_env, require_tool, run_tool


@pytest.fixture
async def reference(tmp_path: Path) -> AsyncIterator[str]:
    """The reference registry on a free port, storing under tmp_path/root."""
    program = require_tool("docker-registry")
    port = free_port()
    config = tmp_path / "reference.yml"
    config.write_text(FILESYSTEM_CONFIG.format(root=tmp_path / "root", port=port))
    # It reads every REGISTRY_* variable as configuration (REGISTRY_AUTH_FILE included).
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = await asyncio.create_subprocess_exec(program, "serve", str(config), env=env)
    url = f"127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"http://{url}/v2/") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the reference registry did not start")
    yield url
    process.terminate()
    await process.wait()


@pytest.fixture
async def portside(tmp_path: Path) -> AsyncIterator[str]:
    config = load_config(
        None,
        {
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "root"),
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        },
    )
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    yield f"127.0.0.1:{server.port}"
    await server.close()


async def copy(env: dict[str, str], source: str, destination: str) -> None:
    done = await run_tool(
        require_tool("skopeo"),
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        source,
        destination,
        env=env,
    )
    assert done.returncode == 0, done.stderr


async def test_both_registries_serve_each_others_images(
    tmp_path: Path, portside: str, reference: str
) -> None:
    env = isolated_client_env(str(tmp_path / "home"))
    ours = make_image(layer_count=2, layer_size=128 * 1024, seed="written-by-portside")
    theirs = make_image(layer_count=2, layer_size=128 * 1024, seed="written-by-reference")
    write_oci_layout(tmp_path / "ours", ours, tag="v1")
    write_oci_layout(tmp_path / "theirs", theirs, tag="v1")

    await copy(env, f"oci:{tmp_path / 'ours'}:v1", f"docker://{portside}/shared/app:ours")
    await copy(env, f"oci:{tmp_path / 'theirs'}:v1", f"docker://{reference}/shared/app:theirs")

    await copy(env, f"docker://{reference}/shared/app:ours", f"oci:{tmp_path / 'a'}:v1")
    await copy(env, f"docker://{portside}/shared/app:theirs", f"oci:{tmp_path / 'b'}:v1")
    for image, pulled in ((ours, tmp_path / "a"), (theirs, tmp_path / "b")):
        blobs = read_oci_layout(pulled)
        assert blobs[image.manifest_digest] == image.manifest
        for digest, content in image.blobs.items():
            assert blobs[digest] == content

    skopeo = require_tool("skopeo")
    for host in (portside, reference):
        listed = await run_tool(
            skopeo, "list-tags", "--tls-verify=false", f"docker://{host}/shared/app", env=env
        )
        assert listed.returncode == 0, listed.stderr
        assert sorted(json.loads(listed.stdout)["Tags"]) == ["ours", "theirs"]
