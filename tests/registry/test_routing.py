"""The route table's matching of ``/v2/<name>/<resource>`` tails: names that contain the
words of other routes, the order in which overlapping routes are tried, and the routes of
recent paths remembered (bounded, each request with access-line fields of its own)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

import pytest
from aiohttp.test_utils import TestServer, make_mocked_request

import registry.routes
from registry.app import create_app
from registry.config import load_config
from registry.routes import REPOSITORY_ROUTES
from registry.routing import Route, RouteMatch, literal_prefix, match_route
from shared.access_log import LOG_FIELDS, AccessLogger
from shared.errors import RegistryError
from tests.registry.conftest import RegistryClient
from tests.registry.helpers import Blob, push_blob
from tests.support.log_keeper import Keeper

DIGEST = "sha256:" + "a" * 64
CASES = [
    ("app/manifests/latest", "manifest", "app", {"reference": "latest"}),
    ("a/manifests/b/manifests/v1", "manifest", "a/manifests/b", {"reference": "v1"}),
    ("a/tags/list/manifests/v1", "manifest", "a/tags/list", {"reference": "v1"}),
    ("a/b/blobs/uploads", "upload_start", "a/b", {}),
    ("a/b/blobs/uploads/", "upload_start", "a/b", {}),
    ("a/blobs/uploads/blobs/uploads/", "upload_start", "a/blobs/uploads", {}),
    ("a/blobs/uploads/some-id", "upload", "a", {"upload_id": "some-id"}),
    (f"a/b/blobs/{DIGEST}", "blob", "a/b", {"digest": DIGEST}),
    (f"a/blobs/b/blobs/{DIGEST}", "blob", "a/blobs/b", {"digest": DIGEST}),
    ("bench/small/tags/list", "tags", "bench/small", {}),
    ("a/tags/list/tags/list", "tags", "a/tags/list", {}),
    (f"a/referrers/{DIGEST}", "referrers", "a", {"digest": DIGEST}),
]


@pytest.mark.parametrize(("tail", "resource", "name", "params"), CASES)
def test_a_tail_names_its_resource_repository_and_parameters(
    tail: str, resource: str, name: str, params: dict[str, str]
) -> None:
    method = "POST" if resource == "upload_start" else "GET"
    match = match_route(REPOSITORY_ROUTES, tail, method)
    assert (match.resource, match.name, dict(match.params)) == (resource, name, params)


@pytest.mark.parametrize("tail", ["app/tags/lists", "app/manifests/", "/tags/list", "app/blobs"])
def test_a_tail_of_no_route_is_404(tail: str) -> None:
    with pytest.raises(RegistryError) as raised:
        match_route(REPOSITORY_ROUTES, tail, "GET")
    assert raised.value.status in (400, 404)


def test_every_route_is_looked_for_by_text_its_matches_all_contain() -> None:
    for route in REPOSITORY_ROUTES:
        assert route.marker and route.suffix.startswith(route.marker)
    assert literal_prefix(r"/blobs/uploads/?") == "/blobs/uploads"
    assert literal_prefix(r"/blobs/(?P<digest>[^/]+)") == "/blobs/"
    assert literal_prefix("/tags/list") == "/tags/list"


async def access_fields(keeper: Keeper, count: int) -> list[dict[str, Any]]:
    """The fields of the first ``count`` access lines: each is logged once its response
    is out, so the client may see a response before its line."""
    for _ in range(500):
        if len(keeper.records) >= count:
            break
        await asyncio.sleep(0.01)
    return [record.fields for record in keeper.records[:count]]  # type: ignore[attr-defined]


@pytest.fixture
async def logged_registry(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[[TestServer], Awaitable[RegistryClient]],
    registry_environ: dict[str, str],
) -> AsyncIterator[tuple[RegistryClient, Keeper]]:
    """A registry on loopback whose access lines are kept as records."""
    logger = logging.getLogger("test_routing.access")
    keeper = Keeper()
    logger.addHandler(keeper)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        app = create_app(load_config(None, registry_environ))
        server = await aiohttp_server(app, access_log=logger, access_log_class=AccessLogger)
        client = await aiohttp_client(server)
        yield client, keeper
    finally:
        logger.removeHandler(keeper)


async def test_a_repeated_path_is_matched_once(
    logged_registry: tuple[RegistryClient, Keeper], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route of a path served again is remembered (by method): the route table's
    expressions and the name's grammar are not run for every pull of the same tag."""
    client, keeper = logged_registry
    matched: list[str] = []

    def counting(routes: tuple[Route, ...], tail: str, method: str) -> RouteMatch:
        matched.append(f"{method} {tail}")
        return match_route(routes, tail, method)

    monkeypatch.setattr(registry.routes, "match_route", counting)
    path = "/v2/remembered/app/manifests/latest"
    for method in ("GET", "GET", "GET", "HEAD", "HEAD"):
        async with client.request(method, path) as response:
            assert response.status == 404  # matched, then MANIFEST_UNKNOWN from storage
    assert matched == [
        "GET remembered/app/manifests/latest",
        "HEAD remembered/app/manifests/latest",
    ]
    fields = await access_fields(keeper, 5)
    assert len(fields) == 5
    for line in fields:
        assert line["http.request.route"] == "manifest"
        assert line["vars.name"] == "remembered/app" and line["vars.reference"] == "latest"


async def test_a_remembered_route_gives_each_request_fields_of_its_own(
    logged_registry: tuple[RegistryClient, Keeper],
) -> None:
    """What one request adds to its access line (the bytes a sendfile sent) is not
    remembered with its route for the next request of the same path."""
    client, keeper = logged_registry
    blob = Blob(b"x" * 5000)
    await push_blob(client, "own/fields", blob)
    path = f"/v2/own/fields/blobs/{blob.digest}"
    async with client.get(path) as response:
        assert response.status == 200 and await response.read() == blob.data
    async with client.get(path, headers={"If-None-Match": f'"{blob.digest}"'}) as response:
        assert response.status == 304
    lines = await access_fields(keeper, 4)  # the upload's two requests, then the two GETs
    first, second = [line for line in lines if line["http.request.uri"] == path]
    assert first["http.response.written"] == 5000
    assert second["http.response.written"] == 0  # no body: nothing of the first request's


async def test_remembered_routes_are_bounded(
    logged_registry: tuple[RegistryClient, Keeper], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths are the clients' to vary: at most RESOLVED_KEPT routes are remembered, and
    a path longer than RESOLVED_LONGEST never is, yet each is still served."""
    client, _ = logged_registry
    monkeypatch.setattr(registry.routes, "_RESOLVED", {})
    monkeypatch.setattr(registry.routes, "RESOLVED_KEPT", 4)
    for index in range(10):
        async with client.get(f"/v2/bounded/app/manifests/tag{index}") as response:
            assert response.status == 404
        assert 1 <= len(registry.routes._RESOLVED) <= 4
    registry.routes._RESOLVED.clear()
    long_id = "u" * 600  # matched as an upload's id, then unknown to storage
    async with client.get(f"/v2/bounded/app/blobs/uploads/{long_id}") as response:
        assert response.status == 404
        assert (await response.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert registry.routes._RESOLVED == {}


@pytest.mark.parametrize("prefix", ["", "/mirror"])
async def test_the_api_route_is_tried_before_the_base_endpoints(
    prefix: str,
    registry_environ: dict[str, str],
    aiohttp_client: Callable[[TestServer | Any], Awaitable[RegistryClient]],
) -> None:
    """aiohttp tries the resources under one path part ("/v2") in the order they were
    added: the API's is first, so an API request fails no match of "/v2/" and "/v2"
    first; those two still reach the base endpoint, and the API its routes."""
    app = create_app(load_config(None, {**registry_environ, "REGISTRY_HTTP_PREFIX": prefix}))
    under_v2 = [
        r.canonical for r in app.router.resources() if r.canonical.startswith(prefix + "/v2")
    ]
    assert under_v2 == [prefix + "/v2/{tail}", prefix + "/v2/", prefix + "/v2"]
    client = await aiohttp_client(app)
    for path in (prefix + "/v2/", prefix + "/v2"):
        async with client.get(path) as response:
            assert response.status == 200 and await response.json() == {}, path
    async with client.get(prefix + "/v2/_catalog") as response:
        assert response.status == 200 and await response.json() == {"repositories": []}
    async with client.post(prefix + "/v2/") as response:
        assert response.status == 405


def test_a_route_is_resolved_without_an_exception(registry_environ: dict[str, str]) -> None:
    """The access line's first fields are set, not added: Request.setdefault is
    MutableMapping's, which raised and caught a KeyError on every request."""
    app = create_app(load_config(None, registry_environ))
    raised: list[type[BaseException]] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            raised.append(arg[0])
        return tracer

    for _ in range(2):  # matched, then remembered
        request = make_mocked_request("GET", "/v2/a/b/manifests/t", app=app)
        sys.settrace(tracer)
        try:
            match = registry.routes.resolve(request)
        finally:
            sys.settrace(None)
        assert match.resource == "manifest"
        assert request[LOG_FIELDS] == {
            "http.request.route": "manifest",
            "vars.name": "a/b",
            "vars.reference": "t",
        }
    assert raised == []


def test_without_access_control_the_api_handler_resolves_the_route(
    registry_environ: dict[str, str],
) -> None:
    """Behind the auth middleware the route is resolved before the handler; without it
    the handler resolves it, rather than first looking for one that is never there (a
    KeyError raised and caught per request). tests/registry/auth serve the other case."""
    app = create_app(load_config(None, registry_environ))
    [api] = [r for r in app.router.routes() if r.resource and r.resource.canonical == "/v2/{tail}"]
    assert api.handler is registry.routes.resolve_and_dispatch
