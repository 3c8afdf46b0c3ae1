"""Blobs are served under an event loop without ``sendfile`` (uvloop's, or a transport
asyncio cannot sendfile on): the handler falls back to copying the file, byte for byte,
ranges too.

Regression: under uvloop ``loop.sendfile`` raised NotImplementedError, so every blob GET
was a 500 and ``docker pull`` failed with "unexpected EOF".
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from typing import NoReturn

import pytest

from registry.handlers import sendfile
from tests.registry.conftest import RegistryClient


async def test_blobs_are_served_without_sendfile(
    registry: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(600 * 1024)  # several copy chunks
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    pushed = await registry.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, data=io.BytesIO(data)
    )
    assert pushed.status == 201

    calls: list[int] = []

    async def no_sendfile(*args: object, **kwargs: object) -> NoReturn:
        calls.append(1)
        raise NotImplementedError("this loop has no sendfile")

    # The app runs on the test's own loop: take its sendfile away, as uvloop lacks one,
    # and make its transports look like another loop's (no raw socket to send into).
    monkeypatch.setattr(asyncio.get_running_loop(), "sendfile", no_sendfile)
    monkeypatch.setattr(sendfile, "_raw_socket", lambda transport: None)
    whole = await registry.get(f"/v2/app/blobs/{digest}")
    assert whole.status == 200
    assert await whole.read() == data
    part = await registry.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=1000-300000"})
    assert part.status == 206
    assert await part.read() == data[1000:300001]
    assert len(calls) == 2
