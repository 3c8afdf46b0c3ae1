"""The registry's one middleware and one response callback around every request: request
id, metrics and error envelope in one frame (registry.middleware), each still doing what
the three middlewares and two callbacks it replaced did."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from registry.app import create_app
from registry.config import load_config
from registry.keys import METRICS
from shared.request_id import RequestIdFilter
from tests.support.metrics import parse
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


async def test_one_middleware_and_one_response_callback_per_request(
    aiohttp_client: MakeClient, registry_environ: dict[str, str], tmp_path: Path
) -> None:
    """Each middleware and each response callback is a coroutine per request: the request
    id, the metrics and the error envelope are one middleware, the headers one callback."""
    app = _app(tmp_path, registry_environ)
    assert len(app.middlewares) == 1
    assert len(app.on_response_prepare) == 1
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
