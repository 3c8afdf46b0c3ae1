"""A blob HEAD's answer and its access line: the head a client gets (the blob's headers,
its length declared, no body) and the bytes the line says were written (none), read off
the response rather than measured from its head."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_request import BaseRequest

from registry.app import create_app
from registry.config import load_config
from shared import access_log
from shared.access_log import AccessLogger, _capture

DATA = os.urandom(4096)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
Client = TestClient[web.Request, web.Application]


SEEN: list[tuple[str, int]] = []


class Written(AccessLogger):
    """Notes each request's method and the bytes its access line says were written."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        SEEN.append((request.method, _capture(request, response, time, None, None)[8]))


async def test_a_blob_head_is_its_headers_and_no_body_measured_from_none(
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data")}
    app = create_app(load_config(None, environ))
    logger = logging.getLogger("test_blob_head_access")
    logger.setLevel(logging.INFO)
    server = await aiohttp_server(app, access_log_class=Written, access_log=logger)
    client = await aiohttp_client(server)
    pushed = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": DIGEST}, data=io.BytesIO(DATA)
    )
    assert pushed.status == 201
    measured: list[int] = []
    original = access_log.body_bytes

    def counting(reason: str, headers: Any, body_length: int) -> int:
        measured.append(body_length)
        return original(reason, headers, body_length)

    monkeypatch.setattr(access_log, "body_bytes", counting)
    SEEN.clear()
    response = await client.head(f"/v2/app/blobs/{DIGEST}")
    assert response.status == 200
    assert await response.read() == b""
    # The head as a StreamResponse given the length wrote it: the length after the blob's.
    assert [name.decode() for name, _ in response.raw_headers] == [
        "Content-Type", "Docker-Content-Digest", "ETag", "Accept-Ranges", "Cache-Control",
        "Content-Length", "X-Request-Id", "Docker-Distribution-API-Version", "Date", "Server",
    ]  # fmt: skip
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["ETag"] == f'"{DIGEST}"'
    await client.close()
    assert SEEN == [("HEAD", 0)]
    assert measured == []  # a StreamResponse's head was measured to find its body's 0
