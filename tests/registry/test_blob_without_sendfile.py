"""Blobs are served under an event loop without ``sendfile``: uvloop's, which ``registry
serve`` may run. The handler falls back to copying the file, byte for byte, ranges too.

Regression: ``loop.sendfile`` raised NotImplementedError under uvloop, so every blob GET
was a 500 and ``docker pull`` failed with "unexpected EOF".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.app import create_app
from registry.config import load_config

uvloop = pytest.importorskip("uvloop")


def test_blobs_are_served_without_sendfile(tmp_path: Path) -> None:
    data = os.urandom(600 * 1024)  # several copy chunks
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    config = load_config(
        None,
        {
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            "REGISTRY_HTTP_SECRET": "a fixed secret for this test only",
        },
    )

    async def scenario() -> None:
        server = TestServer(create_app(config), host="127.0.0.1")
        # Bounded: a failure after the headers went out leaves the client waiting for a body.
        async with TestClient(server, timeout=aiohttp.ClientTimeout(total=10)) as client:
            pushed = await client.post(
                "/v2/app/blobs/uploads/", params={"digest": digest}, data=data
            )
            assert pushed.status == 201
            whole = await client.get(f"/v2/app/blobs/{digest}")
            assert whole.status == 200
            assert await whole.read() == data
            part = await client.get(
                f"/v2/app/blobs/{digest}", headers={"Range": "bytes=1000-300000"}
            )
            assert part.status == 206
            assert await part.read() == data[1000:300001]

    uvloop.run(scenario())
