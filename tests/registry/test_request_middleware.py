"""The registry's one middleware around every request: request id, metrics, error envelope
and the standard response headers in one frame (registry.middleware), each still doing
what the three middlewares and two response callbacks it replaced did."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from registry.app import create_app
from registry.config import load_config
from registry.keys import METRICS
from shared.request_id import RequestIdFilter
from tests.registry.helpers import Blob, push_blob, put_manifest
from tests.support.metrics import parse
from tests.support.oci import OCI_MANIFEST, make_image
from tests.support.portside_servers import free_port

RegistryClient = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[RegistryClient]]


def _app(tmp_path: Path, registry_environ: dict[str, str]) -> web.Application:
    """The registry app with metrics served and one configured ``http.headers`` entry."""
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\nhttp:\n  headers:\n    X-Content-Type-Options: [nosniff]\n")
    environ = {
        **registry_environ,
        "REGISTRY_HTTP_DEBUG_ADDR": f"127.0.0.1:{free_port()}",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
    }
    return create_app(load_config(config, environ))


def _requests(app: web.Application, route: str, method: str, code: str) -> float:
    metrics = app[METRICS]
    metrics.flush()
    scraped = parse(generate_latest(metrics.registry).decode())
    return scraped.value("registry_http_requests_total", handler=route, method=method, code=code)


async def test_one_middleware_and_no_response_callback_per_request(
    aiohttp_client: MakeClient, registry_environ: dict[str, str], tmp_path: Path
) -> None:
    """Each middleware and each response callback is a coroutine per request: the request
    id, the metrics, the error envelope and the standard headers are one middleware."""
    app = _app(tmp_path, registry_environ)
    assert len(app.middlewares) == 1
    assert len(app.on_response_prepare) == 0
    client = await aiohttp_client(app)
    response = await client.get("/v2/a/b/manifests/missing", headers={"X-Request-Id": "r-1"})
    assert response.status == 404
    assert (await response.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert response.headers["X-Request-Id"] == "r-1"
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert _requests(app, "manifest", "GET", "404") == 1


async def test_a_failure_is_rendered_counted_and_logged_under_its_request_id(
    aiohttp_client: MakeClient,
    registry_environ: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app(tmp_path, registry_environ)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/v2/")

    app.router.add_get("/broken", broken)
    app.router.add_get("/moved", moved)
    caplog.handler.addFilter(RequestIdFilter())
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="registry"):
        response = await client.get("/broken", headers={"X-Request-Id": "r-2"})
    assert response.status == 500
    assert (await response.json())["errors"][0]["code"] == "UNKNOWN"
    assert "a bug" not in await response.text()
    assert response.headers["X-Request-Id"] == "r-2"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "unhandled error in GET /broken"
    assert getattr(record, "request_id", None) == "r-2"
    assert record.exc_info is not None and record.exc_info[1] is not None
    assert str(record.exc_info[1]) == "a bug"
    assert _requests(app, "unknown", "GET", "500") == 1

    redirected = await client.get("/moved", allow_redirects=False)
    assert redirected.status == 302  # a redirect is passed on, not rendered, and counted
    assert redirected.headers["X-Request-Id"]
    assert _requests(app, "unknown", "GET", "302") == 1


def _standard_headers(response: ClientResponse, request_id: str, path: str) -> None:
    assert response.headers["X-Request-Id"] == request_id, path
    assert response.headers["X-Content-Type-Options"] == "nosniff", path
    api = response.headers.get("Docker-Distribution-API-Version")
    assert api == ("registry/2.0" if "/v2" in path else None), path


async def test_every_kind_of_response_carries_the_standard_headers(
    aiohttp_client: MakeClient, registry_environ: dict[str, str], tmp_path: Path
) -> None:
    """Set by the middleware, not a response callback: the responses it returns, the
    ones handlers send themselves (blob bodies, with sendfile or not), errors of the
    router and of handlers, redirects and aiohttp's answer to a timeout."""
    app = _app(tmp_path, registry_environ)

    async def slow(request: web.Request) -> web.Response:
        raise TimeoutError

    app.router.add_get("/v2-slow", slow)
    client = await aiohttp_client(app)
    image = make_image(layer_count=1, layer_size=4096)
    for data in image.blobs.values():
        assert (await push_blob(client, "a/b", Blob(data))).status == 201
    assert (await put_manifest(client, "a/b", "t", image.manifest)).status == 201
    layer = Blob(image.layers[0])
    blob_path = f"/v2/a/b/blobs/{layer.digest}"
    cases: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/v2/a/b/manifests/t", {"Accept": OCI_MANIFEST}, 200),
        ("HEAD", "/v2/a/b/manifests/t", {"Accept": OCI_MANIFEST}, 200),
        ("HEAD", blob_path, {}, 200),
        ("GET", blob_path, {}, 200),  # sent by the handler itself (sendfile)
        ("GET", blob_path, {"Range": "bytes=2-5"}, 206),
        ("GET", blob_path, {"Accept-Encoding": "gzip"}, 200),
        ("GET", "/v2/a/b/tags/list?n=5", {}, 200),
        ("GET", "/v2/_catalog", {}, 200),
        ("GET", "/v2/", {}, 200),
        ("GET", "/v2", {}, 200),
        ("GET", "/", {}, 200),
        ("GET", "/v2/a/b/manifests/missing", {}, 404),
        ("GET", "/no/such/path", {}, 404),
        ("POST", "/v2/", {}, 405),
        ("GET", "/v2-slow", {}, 504),
    ]
    for number, (method, path, headers, status) in enumerate(cases):
        request_id = f"r-{number}"
        response = await client.request(
            method, path, headers={**headers, "X-Request-Id": request_id}
        )
        assert response.status == status, (method, path)
        _standard_headers(response, request_id, path)
        await response.read()
    # aiohttp's own answer to a timeout, as before; counted 500, as before.
    timed_out = await client.get("/v2-slow")
    assert await timed_out.text() == ""  # aiohttp writes no message for a 504
    assert timed_out.headers["Content-Type"].startswith("text/plain")
    assert _requests(app, "unknown", "GET", "500") == 2


async def test_a_configured_header_never_replaces_the_response_s_own(
    aiohttp_client: MakeClient, registry_environ: dict[str, str], tmp_path: Path
) -> None:
    app = _app(tmp_path, registry_environ)

    async def own(request: web.Request) -> web.Response:
        return web.Response(headers={"X-Content-Type-Options": "mine"})

    app.router.add_get("/own", own)
    client = await aiohttp_client(app)
    response = await client.get("/own")
    assert response.headers.getall("X-Content-Type-Options") == ["mine"]
