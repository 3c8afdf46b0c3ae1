"""Conditional blob requests, as Distribution answers them through Go's
``http.ServeContent``: ``If-None-Match`` naming the blob's ETag (or ``*``) is a 304 for
GET and HEAD, ahead of any Range; ``If-Range`` other than the strong ETag turns a Range
request into the whole blob.

Regression: portside sent every blob whole whatever ``If-None-Match`` said, although its
responses carry the ETag a client revalidates with.
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from tests.registry.conftest import RegistryClient

DATA = os.urandom(64 * 1024)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
PATH = f"/v2/app/blobs/{DIGEST}"
ETAG = f'"{DIGEST}"'


@pytest.fixture
async def pushed(registry: RegistryClient) -> RegistryClient:
    response = await registry.post(
        "/v2/app/blobs/uploads/", params={"digest": DIGEST}, data=io.BytesIO(DATA)
    )
    assert response.status == 201, await response.text()
    return registry


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("if_none_match", [ETAG, f"W/{ETAG}", "*", f'"other", {ETAG}'])
async def test_a_current_copy_is_not_sent_again(
    pushed: RegistryClient, method: str, if_none_match: str
) -> None:
    response = await pushed.request(method, PATH, headers={"If-None-Match": if_none_match})
    assert response.status == 304, response
    assert await response.read() == b""
    assert response.headers["ETag"] == ETAG
    assert response.headers["Docker-Content-Digest"] == DIGEST
    assert "Cache-Control" in response.headers
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize("if_none_match", ['"sha256:0000"', 'W/"other"', "not an etag"])
async def test_another_etag_gets_the_blob(pushed: RegistryClient, if_none_match: str) -> None:
    response = await pushed.get(PATH, headers={"If-None-Match": if_none_match})
    assert response.status == 200 and await response.read() == DATA
    assert response.headers["ETag"] == ETAG


async def test_not_modified_outranks_the_range(pushed: RegistryClient) -> None:
    headers = {"If-None-Match": ETAG, "Range": f"bytes={len(DATA) + 10}-"}
    response = await pushed.get(PATH, headers=headers)
    assert response.status == 304, response


async def test_if_range_with_the_etag_keeps_the_range(pushed: RegistryClient) -> None:
    headers = {"If-Range": ETAG, "Range": "bytes=100-199"}
    response = await pushed.get(PATH, headers=headers)
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"
    assert await response.read() == DATA[100:200]


@pytest.mark.parametrize(
    "if_range", ['"sha256:0000"', f"W/{ETAG}", "Sun, 29 Nov 2026 00:00:00 GMT"]
)
async def test_any_other_if_range_gets_the_whole_blob(
    pushed: RegistryClient, if_range: str
) -> None:
    # A weak ETag never validates a range, and a blob has no date to compare with.
    response = await pushed.get(PATH, headers={"If-Range": if_range, "Range": "bytes=100-199"})
    assert response.status == 200
    assert "Content-Range" not in response.headers
    assert await response.read() == DATA
