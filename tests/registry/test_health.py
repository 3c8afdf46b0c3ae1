"""``/debug/health`` and the API gate, against a real ``registry serve`` on loopback:
each check kind made to fail for real (storage root removed, Redis stopped, a file
created, a TCP port closed, an HTTP endpoint answering 500) and, where Distribution's
semantics say so, made to pass again."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from tests.support.backing_services import MotoServer, RedisServer
from tests.support.portside_servers import ServerProcess, filesystem_registry, free_port

INTERVAL = "0.2s"
WAIT = 20.0  # generous: two cores shared with other test runs


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(answer: Callable[[], tuple[int, Any]], expected: int) -> Any:
    """Poll until ``answer`` has status ``expected``; its body."""
    deadline = time.monotonic() + WAIT
    while True:
        status, body = answer()
        if status == expected:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"still {status} {body!r} after {WAIT:.0f}s, not {expected}")
        time.sleep(0.05)


@contextlib.contextmanager
def serving(tmp_path: Path, **settings: str) -> Iterator[tuple[ServerProcess, str]]:
    """A registry with a debug listener; the debug listener's URL."""
    debug_port = free_port()
    registry = filesystem_registry(
        tmp_path, REGISTRY_HTTP_DEBUG_ADDR=f"127.0.0.1:{debug_port}", **settings
    )
    if "REGISTRY_STORAGE" in settings:  # another driver than the helper's filesystem one
        del registry.env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]
    registry.start()
    try:
        yield registry, f"http://127.0.0.1:{debug_port}"
    finally:
        registry.stop()


def test_storage_root_removed_is_not_ready_until_it_is_back(tmp_path: Path) -> None:
    with serving(
        tmp_path,
        REGISTRY_HEALTH_STORAGEDRIVER_ENABLED="true",
        REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL=INTERVAL,
        REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD="2",
    ) as (registry, debug):
        ready = lambda: get(debug + "/debug/health")  # noqa: E731
        assert wait_for(ready, 200) == {}
        root, away = tmp_path / "data", tmp_path / "data-away"
        root.rename(away)  # the volume vanishes while serving
        failing = wait_for(ready, 503)
        assert list(failing) == ["storagedriver_filesystem"]
        assert f"storage root {root}" in failing["storagedriver_filesystem"]
        # The API refuses too, as Distribution's health.Handler makes it...
        status, body = get(registry.url + "/v2/")
        assert status == 503
        assert body["errors"][0]["code"] == "UNAVAILABLE"
        assert body["errors"][0]["detail"] == "health check failed: please see /debug/health"
        # ...while the process is alive: liveness says so and nothing restarts it.
        assert get(debug + "/debug/health/live") == (200, {})
        away.rename(root)
        assert wait_for(ready, 200) == {}
        assert get(registry.url + "/v2/")[0] == 200
    assert "health check storagedriver_filesystem failing" in registry.log()


def test_s3_unreachable_is_not_ready_and_an_empty_bucket_is(tmp_path: Path) -> None:
    s3 = MotoServer(tmp_path / "moto")
    s3.start()
    try:
        bucket = s3.create_bucket()
        with serving(
            tmp_path,
            REGISTRY_STORAGE="s3",
            **s3.s3_environ(bucket),
            REGISTRY_HEALTH_STORAGEDRIVER_ENABLED="true",
            REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL=INTERVAL,
        ) as (registry, debug):
            ready = lambda: get(debug + "/debug/health")  # noqa: E731
            # An empty bucket has no "/": the backend answered, so it passes (Distribution).
            assert wait_for(ready, 200) == {}
            s3.stop()
            assert list(wait_for(ready, 503)) == ["storagedriver_s3"]
            s3.start()  # on the same port, empty again
            s3.create_bucket(bucket)
            assert wait_for(ready, 200) == {}
        assert "portside-test-secret" not in registry.log()
    finally:
        s3.stop()


class PasswordRedis(RedisServer):
    """``redis-server`` that wants a password, to show it never reaches an answer."""

    password = "s3cret-redis-pw"

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", self.password]


def test_redis_stopped_is_not_ready_naming_redis_without_its_password(tmp_path: Path) -> None:
    redis = PasswordRedis(tmp_path / "redis")
    redis.start()
    try:
        with serving(
            tmp_path,
            REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR="redis",
            REGISTRY_REDIS_ADDR=redis.addr,
            REGISTRY_REDIS_PASSWORD=redis.password,
            REGISTRY_HEALTH_REDIS_INTERVAL=INTERVAL,
        ) as (registry, debug):
            ready = lambda: get(debug + "/debug/health")  # noqa: E731
            assert wait_for(ready, 200) == {}
            redis.stop()
            failing = wait_for(ready, 503)
            assert list(failing) == ["redis"]
            assert redis.addr in failing["redis"]
            assert redis.password not in failing["redis"]
            # Readiness only: the cache falls back to storage, so the API still serves.
            assert get(registry.url + "/v2/")[0] == 200
            redis.start()  # on the same port
            assert wait_for(ready, 200) == {}
        assert redis.password not in registry.log()
        assert "health check redis failing" in registry.log()
    finally:
        redis.stop()


def test_a_file_takes_the_registry_out_of_rotation_while_it_exists(tmp_path: Path) -> None:
    marker = tmp_path / "out-of-rotation"
    with serving(
        tmp_path,
        REGISTRY_HEALTH_FILE=f"[{{file: {marker}, interval: {INTERVAL}}}]",
    ) as (registry, debug):
        ready = lambda: get(debug + "/debug/health")  # noqa: E731
        assert wait_for(ready, 200) == {}
        marker.touch()
        assert wait_for(ready, 503) == {str(marker): "file exists"}
        assert get(registry.url + "/")[0] == 503  # a balancer probing / sees it too
        marker.unlink()
        assert wait_for(ready, 200) == {}
        assert get(registry.url + "/")[0] == 200


def test_tcp_check_fails_once_the_port_is_closed(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    addr = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with serving(
            tmp_path,
            REGISTRY_HEALTH_TCP=f"[{{addr: '{addr}', interval: {INTERVAL}, threshold: 3}}]",
        ) as (_, debug):
            ready = lambda: get(debug + "/debug/health")  # noqa: E731
            assert wait_for(ready, 200) == {}
            listener.close()
            failing = wait_for(ready, 503)
            assert list(failing) == [addr]
            assert failing[addr].startswith(f"{addr}: connection failed")
    finally:
        listener.close()


class _Endpoint(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: ClassVar[list[str | None]] = []

    def do_HEAD(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_check_fails_while_the_endpoint_answers_500(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    uri, shown = f"http://user:hunter2@127.0.0.1:{port}/ping", f"http://127.0.0.1:{port}/ping"
    try:
        with serving(
            tmp_path,
            REGISTRY_HEALTH_HTTP=(
                f"[{{uri: '{uri}', interval: {INTERVAL}, timeout: 5s,"
                " headers: {Authorization: [Bearer header-secret]}}]"
            ),
        ) as (registry, debug):
            ready = lambda: get(debug + "/debug/health")  # noqa: E731
            assert wait_for(ready, 200) == {}
            assert "Bearer header-secret" in _Endpoint.seen
            _Endpoint.status = 500
            failing = wait_for(ready, 503)
            assert failing == {
                shown: f"{shown}: downstream service returned unexpected status: 500"
            }
            _Endpoint.status = 200
            assert wait_for(ready, 200) == {}
        assert "hunter2" not in registry.log() and "header-secret" not in registry.log()
    finally:
        _Endpoint.status = 200
        server.shutdown()
        server.server_close()
        thread.join()


def test_without_checks_the_registry_is_ready_and_serves(tmp_path: Path) -> None:
    with serving(tmp_path) as (registry, debug):
        assert get(debug + "/debug/health") == (200, {})
        assert get(debug + "/debug/health/live") == (200, {})
        shutil.rmtree(tmp_path / "data")  # no storage check configured: not watched
        time_to_notice = 0.5
        time.sleep(time_to_notice)
        assert get(debug + "/debug/health") == (200, {})
        assert get(registry.url + "/")[0] == 200
