"""End to end with a real client: skopeo pushes a multi-layer OCI image to the registry,
pulls it back, lists, inspects and deletes it; every byte must come back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from registry.app import create_app
from registry.config import load_config
from tests.support.oci import make_image, read_oci_layout, write_oci_layout
from tests.support.tools import isolated_client_env, require_tool, run_tool


async def start_registry(tmp_path: Path) -> TestServer:
    config = load_config(
        None,
        {
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        },
    )
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    return server


async def test_push_pull_round_trip_is_byte_identical(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    env = isolated_client_env(str(tmp_path / "home"))
    image = make_image(layer_count=3, layer_size=300 * 1024)
    write_oci_layout(tmp_path / "source", image, tag="v1")
    server = await start_registry(tmp_path)
    try:
        target = f"docker://127.0.0.1:{server.port}/e2e/multi-layer/app:v1"
        tls = "--dest-tls-verify=false"
        pushed = await run_tool(
            skopeo, "copy", tls, f"oci:{tmp_path / 'source'}:v1", target, env=env
        )
        assert pushed.returncode == 0, pushed.stderr

        pulled = await run_tool(
            skopeo,
            "copy",
            "--src-tls-verify=false",
            target,
            f"oci:{tmp_path / 'pulled'}:v1",
            env=env,
        )
        assert pulled.returncode == 0, pulled.stderr
        blobs = read_oci_layout(tmp_path / "pulled")
        assert blobs[image.manifest_digest] == image.manifest
        for digest, content in image.blobs.items():
            assert blobs[digest] == content, digest

        inspected = await run_tool(
            skopeo, "inspect", "--raw", "--tls-verify=false", target, env=env
        )
        assert inspected.returncode == 0, inspected.stderr
        assert inspected.stdout.encode() == image.manifest

        tags = await run_tool(
            skopeo,
            "list-tags",
            "--tls-verify=false",
            f"docker://127.0.0.1:{server.port}/e2e/multi-layer/app",
            env=env,
        )
        assert tags.returncode == 0, tags.stderr
        assert json.loads(tags.stdout)["Tags"] == ["v1"]

        deleted = await run_tool(skopeo, "delete", "--tls-verify=false", target, env=env)
        assert deleted.returncode == 0, deleted.stderr
        gone = await run_tool(skopeo, "inspect", "--raw", "--tls-verify=false", target, env=env)
        assert gone.returncode != 0
    finally:
        await server.close()


async def test_copy_between_repositories_mounts_blobs(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    env = isolated_client_env(str(tmp_path / "home"))
    image = make_image(layer_count=2, layer_size=64 * 1024, seed="mount")
    write_oci_layout(tmp_path / "source", image, tag="v1")
    server = await start_registry(tmp_path)
    try:
        base = f"docker://127.0.0.1:{server.port}"
        first = await run_tool(
            skopeo,
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'source'}:v1",
            f"{base}/team-a/app:v1",
            env=env,
        )
        assert first.returncode == 0, first.stderr
        second = await run_tool(
            skopeo,
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"{base}/team-a/app:v1",
            f"{base}/team-b/app:v1",
            env=env,
        )
        assert second.returncode == 0, second.stderr
        async with aiohttp.ClientSession(base_url=str(server.make_url("/"))) as client:
            for digest, content in image.blobs.items():
                response = await client.get(f"/v2/team-b/app/blobs/{digest}")
                assert response.status == 200
                assert await response.read() == content
    finally:
        await server.close()
