"""Request bodies both services cannot or need not read, against the real processes: a
body that stops arriving (http.bodytimeout), a bad Content-Encoding, malformed chunks, a
client that hangs up mid-body. Each gets the JSON envelope with a 4xx status (or, for a
hang-up, nothing) and one log line: never a 500, never a traceback. The registry stores
a body as sent, Content-Encoding or not, as Distribution does."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.shared.test_hostile_requests import assert_clean_log, raw_exchange
from tests.shared.test_listener import service_command
from tests.support.portside_servers import ServerProcess, free_port

BODY_TIMEOUT = 1.5
MARGIN = 8.0  # two shared cores may delay a close, never hasten it
FORM = "Content-Type: application/x-www-form-urlencoded\r\n"
NAME = "bodies/repo"


@pytest.fixture(scope="module", params=["registry", "tokenauth"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("bodies")
    port = free_port()
    args, env = service_command(request.param, directory, port)
    prefix = "REGISTRY" if request.param == "registry" else "TOKENAUTH"
    env[f"{prefix}_HTTP_BODYTIMEOUT"] = f"{BODY_TIMEOUT:g}s"
    ready = "/health" if args[0] == "tokenauth" else "/"
    process = ServerProcess(args[0], args, port, ready, directory / "server.log", env)
    process.start()
    yield process
    process.stop()


def upload_path(server: ServerProcess) -> str:
    """A fresh upload session's path."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.request("POST", f"/v2/{NAME}/blobs/uploads/", headers={"Content-Length": "0"})
        response = connection.getresponse()
        response.read()
        assert response.status == 202, response.status
        location = response.headers["Location"]
        return location.removeprefix(server.url)
    finally:
        connection.close()


def body_targets(server: ServerProcess) -> list[tuple[str, str, str]]:
    """(method, path, extra head lines) of each request that reads a body, and the error
    code it answers an unreadable body with."""
    if server.name == "tokenauth":
        return [("POST", "/auth", FORM)]
    return [
        ("PATCH", upload_path(server), ""),
        ("PUT", f"/v2/{NAME}/manifests/t1", ""),
    ]


def expected_code(server: ServerProcess, method: str) -> str:
    if server.name == "tokenauth":
        return "INVALID_REQUEST"
    return "MANIFEST_INVALID" if method == "PUT" else "BLOB_UPLOAD_INVALID"


def parse(answer: bytes) -> tuple[int, bytes, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, json.loads(body)


def wait_for_log(server: ServerProcess, text: str) -> str:
    deadline = time.monotonic() + 20
    while text not in (log := server.log()):
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.05)
    return log


# ------------------------------------------------------------------ bodies that stop


async def answer_to_stalled_body(port: int, head: bytes) -> tuple[float, bytes]:
    """Seconds until the server closes a connection that sent ``head`` and part of its
    body, then nothing; and what it answered."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = loop.time()
    try:
        writer.write(head + b"grant_type=")
        answer = await asyncio.wait_for(reader.read(), BODY_TIMEOUT + MARGIN)
        return loop.time() - start, answer
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_is_a_408_after_the_body_timeout(
    server: ServerProcess,
) -> None:
    targets = body_targets(server)
    heads = [
        f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: 100\r\n\r\n".encode()
        for method, path, extra in targets
    ]
    answers = await asyncio.gather(*(answer_to_stalled_body(server.port, h) for h in heads))
    for (method, _, _), (lasted, answer) in zip(targets, answers, strict=True):
        assert BODY_TIMEOUT - 0.3 < lasted < BODY_TIMEOUT + MARGIN, (method, lasted, answer)
        status, head, body = parse(answer)
        assert status == 408, answer
        assert b"Connection: close" in head, head
        assert body["errors"][0]["code"] == expected_code(server, method)  # type: ignore[index]
    assert_clean_log(server)


def test_a_body_that_keeps_arriving_slowly_is_not_cut(server: ServerProcess) -> None:
    """The timeout bounds each pause, not the whole body."""
    method, path, extra = body_targets(server)[0]
    body = b"grant_type=password&client_id=x&x=" + b"a" * 6
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as connection:
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode())
        for piece in (body[:10], body[10:20], body[20:30], body[30:]):
            time.sleep(BODY_TIMEOUT / 2)  # four pauses: longer than one timeout in all
            connection.sendall(piece)
        answer = connection.recv(65536)
    assert int(answer.split(b" ")[1]) in (202, 400, 401), answer  # the body was read


# ------------------------------------------------------------------ unreadable bodies


def test_a_bad_content_encoding_is_a_400_or_stored_as_sent(server: ServerProcess) -> None:
    for method, path, extra in body_targets(server):
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Encoding: gzip\r\n"
            "Content-Length: 7\r\nConnection: close\r\n\r\ngarbage"
        )
        answer = raw_exchange(server, request.encode())
        status = int(answer.split(b" ")[1])
        if method == "PATCH":  # the registry stores the bytes as sent
            assert status == 202, answer
            continue
        assert status == 400, answer
        assert parse(answer)[2]["errors"][0]["code"] == expected_code(server, method)  # type: ignore[index]
    if server.name == "tokenauth":
        log = wait_for_log(server, "unreadable request body (ContentEncodingError)")
        assert '"outcome": "invalid_request"' in log or "invalid_request" in log
    assert_clean_log(server)


def test_malformed_chunks_are_a_400(server: ServerProcess) -> None:
    for method, path, extra in body_targets(server):
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n4\r\nabcd\r\nzz\r\n"
        )
        answer = raw_exchange(server, request.encode())
        status, _, body = parse(answer)
        # A framing error: aiohttp's parser may refuse it before a handler reads the
        # body (shared.http_server answers with the service's generic code) or fail the
        # body under the handler (the handler's code); a 400 with the envelope either way.
        assert status == 400, answer
        assert body["errors"][0]["code"] in (  # type: ignore[index]
            expected_code(server, method),
            "BLOB_UPLOAD_INVALID" if server.name == "registry" else "INVALID_REQUEST",
        )
    assert_clean_log(server)


def test_a_gzip_blob_is_stored_as_sent(server: ServerProcess) -> None:
    if server.name != "registry":
        pytest.skip("a registry upload")
    data = gzip.compress(b"layer bytes " * 100)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
        path = upload_path(server)
        query = "&" if "?" in path else "?"
        connection.request("PUT", f"{path}{query}digest={digest}", data, headers)
        response = connection.getresponse()
        assert response.status == 201, response.read()
        response.read()
        connection.request("GET", f"/v2/{NAME}/blobs/{digest}")
        response = connection.getresponse()
        assert response.read() == data
    finally:
        connection.close()


def test_a_client_hanging_up_mid_body_is_one_info_line(server: ServerProcess) -> None:
    if server.name != "registry":
        pytest.skip("a registry upload")
    path = upload_path(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as connection:
        head = f"PATCH {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
        connection.sendall(head.encode() + b"x" * 1000)
        time.sleep(0.3)  # the handler is reading the body
    wait_for_log(server, f"connection with 127.0.0.1 ended during PATCH {path.split('?')[0]}: ")
    assert_clean_log(server)
