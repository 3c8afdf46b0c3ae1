"""The log lines of both services, read from real processes: ``log.formatter`` and
``log.fields``, one access line per request, the request id that crosses a load balancer,
the registry and the token server, and lines written on a thread, all of them, even when
the output blocks or the process is stopped."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.portside_servers import (
    REPOSITORY_ROOT,
    START_TIMEOUT,
    ServerProcess,
    filesystem_registry,
    free_port,
    server_env,
)
from tests.tokenauth.conftest import ISSUER, REALM, SERVICE, Setup, basic, write_setup

REQUEST_ID = "lb-7f3a2c-0001"
ACCESS_FIELDS = {
    "http.request.id",
    "http.request.method",
    "http.request.uri",
    "http.request.route",
    "http.request.remoteaddr",
    "http.request.host",
    "http.request.useragent",
    "http.response.status",
    "http.response.written",
    "http.response.duration",
}


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's log, each of which must be one JSON object."""
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def auth_setup(directory: Path) -> Setup:
    directory.mkdir()
    return write_setup(directory)


def tokenauth_server(setup: Setup, tmp_path: Path, **settings: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(
        "tokenauth",
        ["tokenauth", "serve", str(setup.config)],
        port,
        "/health",
        tmp_path / "tokenauth.log",
        env={"TOKENAUTH_HTTP_ADDR": f"127.0.0.1:{port}", **settings},
    )


@pytest.fixture
def token_deployment(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """tokenauth and a registry trusting it, both logging JSON; stopped (SIGTERM) after."""
    setup = auth_setup(tmp_path / "auth")
    tokenauth = tokenauth_server(setup, tmp_path, TOKENAUTH_LOG_FORMATTER="json")
    registry = filesystem_registry(
        tmp_path,
        REGISTRY_LOG_FORMATTER="json",
        REGISTRY_LOG_FIELDS="{environment: staging}",
        REGISTRY_AUTH="token",
        REGISTRY_AUTH_TOKEN_REALM=REALM,
        REGISTRY_AUTH_TOKEN_SERVICE=SERVICE,
        REGISTRY_AUTH_TOKEN_ISSUER=ISSUER,
        REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE=str(setup.directory / "token.crt"),
    )
    try:
        tokenauth.start()
        registry.start()
        yield registry, tokenauth
    finally:
        registry.stop()
        tokenauth.stop()


async def test_one_request_id_across_registry_and_tokenauth(
    token_deployment: tuple[ServerProcess, ServerProcess],
) -> None:
    """A balancer's X-Request-Id is kept by both services, sent back, and on every line
    logged for the request: the registry's access lines, tokenauth's and its audit line."""
    registry, tokenauth = token_deployment
    same_id = {"X-Request-Id": REQUEST_ID}
    scope = "repository:alice/app:pull"
    async with aiohttp.ClientSession() as http:
        sizes = []  # the body bytes each access line must report
        async with http.get(f"{registry.url}/v2/alice/app/tags/list", headers=same_id) as r:
            assert r.status == 401 and r.headers["X-Request-Id"] == REQUEST_ID
            sizes.append(len(await r.read()))
        params = {"service": SERVICE, "scope": scope}
        headers = {**same_id, **basic("alice", "alice-pw")}
        async with http.get(f"{tokenauth.url}/auth", params=params, headers=headers) as r:
            assert r.status == 200 and r.headers["X-Request-Id"] == REQUEST_ID
            token = (await r.json())["token"]
        headers = {**same_id, "Authorization": f"Bearer {token}"}
        async with http.get(f"{registry.url}/v2/alice/app/tags/list", headers=headers) as r:
            assert r.status == 404 and r.headers["X-Request-Id"] == REQUEST_ID
            sizes.append(len(await r.read()))
    assert registry.stop() == 0 and tokenauth.stop() == 0  # the last lines are flushed

    lines = json_lines(registry)
    access = [line for line in lines if line.get("http.request.id") == REQUEST_ID]
    assert [line["http.response.status"] for line in access] == [401, 404]
    assert [line["http.response.written"] for line in access] == sizes
    for line in access:
        assert set(line) >= ACCESS_FIELDS and line["msg"] == "response completed"
        assert line["level"] == "info" and line["time"].endswith("Z")
        assert line["environment"] == "staging"  # log.fields
        assert line["http.request.route"] == "tags" and line["vars.name"] == "alice/app"
        assert line["http.request.remoteaddr"] == "127.0.0.1"
        assert line["http.request.uri"] == "/v2/alice/app/tags/list"

    lines = json_lines(tokenauth)
    mine = [line for line in lines if line.get("http.request.id") == REQUEST_ID]
    audit = [line for line in mine if line["logger"] == "tokenauth.audit"]
    (access_line,) = [line for line in mine if line["logger"] == "tokenauth.access"]
    assert access_line["http.response.status"] == 200
    assert access_line["http.request.route"] == "/auth"
    (audit_line,) = audit
    decision = json.loads(audit_line["msg"])
    assert decision["outcome"] == "granted" and decision["request_id"] == REQUEST_ID
    assert "alice-pw" not in tokenauth.log() and token not in tokenauth.log()


def test_log_formats(tmp_path: Path) -> None:
    """``logstash`` has logrus-logstash-hook's keys; ``text`` appends key=value fields."""
    setup = auth_setup(tmp_path / "auth")
    for formatter in ("logstash", "text"):
        (tmp_path / formatter).mkdir()
        server = tokenauth_server(
            setup,
            tmp_path / formatter,
            TOKENAUTH_LOG_FORMATTER=formatter,
            TOKENAUTH_LOG_FIELDS="{region: eu-1}",
        )
        server.start()
        try:
            headers = {"X-Request-Id": REQUEST_ID, "User-Agent": "probe 1.0"}
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", "/health", headers=headers)
            assert connection.getresponse().status == 200
            connection.close()
        finally:
            assert server.stop() == 0
        log = server.log()
        if formatter == "logstash":
            lines = [json.loads(line) for line in log.splitlines()]
            (line,) = [line for line in lines if line.get("http.request.id") == REQUEST_ID]
            assert line["@version"] == "1" and line["@timestamp"].endswith("Z")
            assert line["message"] == "response completed" and line["region"] == "eu-1"
        else:
            (line,) = [line for line in log.splitlines() if REQUEST_ID in line]
            assert " INFO tokenauth.access response completed " in line
            assert f"http.request.id={REQUEST_ID}" in line and "region=eu-1" in line
            assert 'http.request.useragent="probe 1.0"' in line  # quoted: it has a space


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_blocked_log_output_does_not_block_requests(tmp_path: Path, workers: str) -> None:
    """Lines are written by a thread: with stderr a pipe nobody reads (full after some
    hundred access lines), the registry still answers; once the pipe is read again, every
    line comes out, the last ones before SIGTERM included. With workers, each has its own
    thread, started after the fork (a thread of the parent's would not exist there)."""
    port = free_port()
    env = server_env(
        {
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            "REGISTRY_LOG_FORMATTER": "json",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "registry", "serve", "--workers", workers],
        cwd=REPOSITORY_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        requests = 1500  # about 600 KB of access lines: ten times a pipe's 64 KiB
        answered = _get_many(f"http://127.0.0.1:{port}/v2/", requests, timeout=START_TIMEOUT)
        assert answered == requests
    finally:
        process.terminate()
        _, output = process.communicate(timeout=60)  # reading lets the thread finish
    lines = [json.loads(line) for line in output.decode().splitlines()]
    access = [line for line in lines if line["msg"] == "response completed"]
    assert len(access) == requests


def _get_many(url: str, count: int, timeout: float) -> int:
    """GET ``url`` ``count`` times on one connection once it answers; how many got 200."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            connection.request("GET", parts.path)
            connection.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    answered = 1
    for _ in range(count - 1):
        connection.request("GET", parts.path)
        response = connection.getresponse()
        response.read()
        answered += response.status == 200
    connection.close()
    return answered
