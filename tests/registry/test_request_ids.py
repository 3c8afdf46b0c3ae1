"""Every response names its request (X-Request-Id): the client's id when it is fit to
copy into logs and headers, else a fresh UUID."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.registry.conftest import ClientFactory
from tests.support.portside_servers import filesystem_registry


@pytest.mark.parametrize("header", [None, "", "x" * 129, "two words", "id;drop", "ünïcode"])
async def test_an_unfit_request_id_is_replaced(
    make_registry: ClientFactory, header: str | None
) -> None:
    registry = await make_registry()
    headers = {} if header is None else {"X-Request-Id": header}
    response = await registry.get("/v2/nothing/here/manifests/x", headers=headers)
    assert response.status == 404  # an error response names its request too
    assert uuid.UUID(response.headers["X-Request-Id"]).version == 4


async def test_fresh_ids_differ_across_workers(tmp_path: Path) -> None:
    """Workers are forked from one process: each must draw ids of its own."""
    registry = filesystem_registry(tmp_path)
    registry.args += ["--workers", "2"]
    registry.start()
    try:
        ids = set()
        async with aiohttp.ClientSession() as http:
            for _ in range(40):  # new connections: the kernel spreads them over both workers
                async with http.get(f"{registry.url}/v2/", headers={"Connection": "close"}) as r:
                    ids.add(r.headers["X-Request-Id"])
    finally:
        assert registry.stop() == 0
    assert len(ids) == 40


async def test_a_fit_request_id_is_kept_on_every_response(make_registry: ClientFactory) -> None:
    registry = await make_registry()
    for path in ("/", "/v2/", "/v2/a/b/blobs/sha256:" + "0" * 64, "/not-an-api-path"):
        response = await registry.get(path, headers={"X-Request-Id": "edge-42.a:b/c=d"})
        assert response.headers["X-Request-Id"] == "edge-42.a:b/c=d", path
