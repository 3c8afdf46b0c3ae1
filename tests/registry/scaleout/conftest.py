"""Fixtures of the scale-out tests: the session's S3 server (moto or Ceph's RADOS Gateway:
every test that takes ``s3_server`` runs against each of ``s3_kinds()``) and Redis server,
an S3-backed registry environment, and a fault-injecting (or delaying) proxy in front of
S3."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.backing_services import RedisServer, S3Server, s3_kinds, shared_services

# The scale-out suites that run on every S3 server of the run (Ceph's RADOS Gateway too):
# the S3 driver's, the OCI conformance checks, the three-instance cluster behind nginx,
# and the upload races that depend on how a real S3 orders writes and copies. The rest test
# portside's own logic, which the S3 server does not change: they run on the first
# server of ``s3_kinds()`` only (moto by default), which keeps CI's run short.
EVERY_S3_SERVER = {
    "test_s3_driver",
    "test_conformance_over_s3",
    "test_cluster",
    "test_upload_chunk_race",
    "test_upload_finish_race",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = s3_kinds()[0]
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("s3_server") if callspec is not None else None
        module = item.path.stem
        if kind is None or kind == first or module in EVERY_S3_SERVER:
            kept.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=s3_kinds())
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    return shared_services().s3_server(request.param)


@pytest.fixture
def redis_server() -> RedisServer:
    return shared_services().redis_server()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()


@pytest.fixture
def registry_environ(s3_server: S3Server, bucket: str, redis_server: RedisServer) -> dict[str, str]:
    """Overrides tests/registry/conftest.py's: here the registry fixtures store in S3 and
    cache blob descriptors in Redis."""
    return {
        **s3_server.s3_environ(bucket),
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
        "REGISTRY_REDIS_ADDR": redis_server.addr,
        "REGISTRY_HTTP_SECRET": "scale-out-test-secret",
    }


Fault = Callable[[web.Request], int | None]
Delay = Callable[[web.Request], float]
Gate = Callable[[web.Request], asyncio.Event | None]
Cut = Callable[[web.Request], int | None]


class FaultyS3:
    """An HTTP proxy in front of an S3 server that answers with an error status whenever
    ``fault(request)`` says so, and forwards everything else unchanged, after
    ``delay(request)`` seconds, or once the event ``gate(request)`` returns is set (to
    order the requests of instances racing each other); a GET's answer ends after
    ``cut(request)`` bytes of its body when that is not None: the connection closes
    mid-body. With ``ranges`` False it drops a request's ``Range``, as an S3-compatible
    server that does not implement it answers with the whole object."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.ranges = True
        self.fault: Fault = lambda request: None
        self.delay: Delay = lambda request: 0.0
        self.gate: Gate = lambda request: None
        self.cut: Cut = lambda request: None
        self.requests = 0
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request
        self.failed = 0
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.seen.append((request.method, request.path))
        status = self.fault(request)
        if status is not None:
            self.failed += 1
            await request.read()
            code = {503: "SlowDown", 404: "NoSuchKey"}.get(status, "InternalError")
            body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
            return web.Response(status=status, text=body, content_type="application/xml")
        assert self.session is not None
        pause, gate = self.delay(request), self.gate(request)
        if pause:
            await asyncio.sleep(pause)
        if gate is not None:
            await gate.wait()
        # The client's Host goes through as it was: a real S3 checks the signature over it.
        headers = dict(request.headers)
        if not self.ranges:
            headers.pop("Range", None)
        async with self.session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            # A BytesIO: aiohttp warns (an error in the tests) on a large raw bytes body.
            data=io.BytesIO(await request.read()),
            allow_redirects=False,
        ) as upstream:
            body_bytes = await upstream.read()
            forwarded = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            cut = self.cut(request) if request.method == "GET" else None
            if cut is not None:
                response = web.StreamResponse(status=upstream.status, headers=forwarded)
                response.content_length = len(body_bytes)
                await response.prepare(request)
                await response.write(body_bytes[:cut])
                assert request.transport is not None
                request.transport.close()  # after what was written: the rest never comes
                return response
            if request.method != "HEAD":
                return web.Response(status=upstream.status, body=body_bytes, headers=forwarded)
            # A HEAD answer keeps the object's Content-Length (and has no body).
            response = web.StreamResponse(status=upstream.status, headers=forwarded)
            response.content_length = int(upstream.headers.get("Content-Length", "0"))
            await response.prepare(request)
            await response.write_eof()
            return response


@contextlib.asynccontextmanager
async def s3_proxy(s3_server: S3Server) -> AsyncIterator[tuple[FaultyS3, str]]:
    """A proxy in front of ``s3_server`` and its URL (use it as ``regionendpoint``)."""
    proxy = FaultyS3(s3_server.url)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        proxy.session = session
        try:
            yield proxy, str(server.make_url("")).rstrip("/")
        finally:
            await server.close()


@pytest.fixture
async def faulty_s3(s3_server: S3Server) -> AsyncIterator[tuple[FaultyS3, str]]:
    """The proxy and its URL (use it as ``regionendpoint``)."""
    async with s3_proxy(s3_server) as proxy:
        yield proxy
