"""How both services listen, run as an operator runs them: slow and idle connections are
dropped (http.readheadertimeout, http.idletimeout), the accept backlog is the system's
maximum, and an address that cannot be bound is one line naming it, exit status 2."""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from registry.handlers import sendfile
from shared import errors
from shared.listener import bind_sockets
from shared.serving import ConnectionTimeouts, serving
from tests.support.portside_servers import (
    REPOSITORY_ROOT,
    ServerProcess,
    free_port,
    server_env,
)
from tests.support.tools import require_tool
from tests.tokenauth.conftest import write_setup

READ_HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 3.0
# Far above the timeouts: two shared cores may delay a close, never hasten it.
MARGIN = 8.0
SLOW_CONNECTIONS = 20

SERVICES = ["registry", "registry --workers 2", "tokenauth"]


def service_command(service: str, directory: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``service`` on ``port``."""
    if service.startswith("registry"):
        env = {
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(directory / "data"),
            "REGISTRY_HTTP_READHEADERTIMEOUT": f"{READ_HEADER_TIMEOUT:g}s",
            "REGISTRY_HTTP_IDLETIMEOUT": f"{IDLE_TIMEOUT:g}s",
        }
        return ["registry", "serve", *service.split()[1:]], env
    setup = write_setup(directory)
    env = {
        "TOKENAUTH_HTTP_ADDR": f"127.0.0.1:{port}",
        "TOKENAUTH_HTTP_READHEADERTIMEOUT": f"{READ_HEADER_TIMEOUT:g}s",
        "TOKENAUTH_HTTP_IDLETIMEOUT": f"{IDLE_TIMEOUT:g}s",
    }
    return ["tokenauth", "serve", str(setup.config)], env


@pytest.fixture(scope="module", params=SERVICES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per service for the whole module: the tests only open connections."""
    directory = tmp_path_factory.mktemp("server")
    port = free_port()
    args, env = service_command(request.param, directory, port)
    ready = "/health" if args[0] == "tokenauth" else "/"
    process = ServerProcess(args[0], args, port, ready, directory / "server.log", env)
    process.start()
    yield process
    process.stop()


def get_status(server: ServerProcess, **headers: str) -> int:
    """The status of a GET of the server's health path."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.request("GET", server.ready_path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


async def closed_after(port: int, head: bytes, trickle: bytes | None) -> float:
    """Seconds until the server closes a connection that sent ``head`` and then, every
    0.2 s, ``trickle`` (None: nothing more); fails if it answers or outlasts the margin."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = loop.time()
    try:
        writer.write(head)
        while loop.time() - start < IDLE_TIMEOUT + MARGIN:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                if trickle:
                    writer.write(trickle)
                continue
            if data:
                raise AssertionError(f"the server answered an incomplete request: {data[:80]!r}")
            return loop.time() - start
        raise AssertionError("the server kept the connection open")
    except ConnectionError:
        return loop.time() - start
    finally:
        writer.close()


async def test_slow_headers_are_dropped_while_they_trickle(server: ServerProcess) -> None:
    head = b"GET /v2/ HTTP/1.1\r\nHost: test\r\n"
    lasted = await asyncio.gather(
        *(closed_after(server.port, head, b"X-Slow: 1\r\n") for _ in range(SLOW_CONNECTIONS))
    )
    # Dropped at the head deadline, well before the idle timeout would have closed them.
    assert max(lasted) < IDLE_TIMEOUT, lasted
    assert get_status(server) == 200  # the server itself is unharmed


async def test_idle_connections_are_closed_after_the_idle_timeout(server: ServerProcess) -> None:
    # Nothing sent: the head deadline never starts, the idle timeout closes it; and a
    # keep-alive connection idles out after its response the same way.
    silent, _ = await asyncio.gather(
        closed_after(server.port, b"", None), asyncio.to_thread(idle_after_response, server)
    )
    assert IDLE_TIMEOUT - 0.5 < silent < IDLE_TIMEOUT + MARGIN


def idle_after_response(server: ServerProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=IDLE_TIMEOUT + MARGIN)
    try:
        connection.request("GET", server.ready_path)
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert connection.sock is not None
        connection.sock.settimeout(IDLE_TIMEOUT + MARGIN)
        assert connection.sock.recv(1) == b""  # closed by the server, not timed out here
    finally:
        connection.close()


def test_large_request_heads_still_fit(server: ServerProcess) -> None:
    """The registry's own handler options (16 KiB header fields) still reach each
    connection now that the listener builds it."""
    if server.name != "registry":
        pytest.skip("a registry setting")
    assert get_status(server, **{"X-Large": "a" * 12_000}) == 200


def test_listens_with_the_system_backlog(server: ServerProcess) -> None:
    require_tool("ss", "iproute2")
    expected = int(Path("/proc/sys/net/core/somaxconn").read_text())
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout
    # For a listening socket, ss shows the backlog as Send-Q (the third column).
    backlogs = [int(line.split()[2]) for line in listing.splitlines()]
    assert backlogs, listing
    assert set(backlogs) == {expected}


def server_side(server: ServerProcess, client: socket.socket, *options: str) -> str:
    """``ss``'s line (with ``options``) for the server's side of ``client``'s connection."""
    local = client.getsockname()[1]
    query = f"( sport = :{server.port} and dport = :{local} )"
    listing = subprocess.run(
        ["ss", "-tnH", *options, "state", "established", query],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout
    assert listing.strip(), "the server's side of the connection is not listed"
    return listing


def served_connection(server: ServerProcess) -> socket.socket:
    """A connection to ``server`` that has had one answer and stays open."""
    client = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    client.sendall(f"GET {server.ready_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert client.recv(4096).startswith(b"HTTP/1.1 200")
    return client


def test_accepted_connections_have_tcp_keepalive(server: ServerProcess) -> None:
    """Keep-alive probes (aiohttp's ``tcp_keepalive``), now asked of the listening socket
    once and inherited by each connection it accepts: the server's side of an open
    connection runs the keep-alive timer."""
    require_tool("ss", "iproute2")
    with served_connection(server) as client:
        assert "timer:(keepalive" in server_side(server, client, "-o")


def test_new_connections_start_with_the_registrys_send_buffer(server: ServerProcess) -> None:
    """The fixed send buffer blob pulls use (registry.handlers.sendfile) is the listening
    socket's, so a connection has it from its first byte, before any blob is asked for."""
    if server.name != "registry":
        pytest.skip("a registry setting")
    require_tool("ss", "iproute2")
    fixed = sendfile._fixed_send_buffer()
    if fixed is None:
        pytest.skip("this machine's limits give autotuning the larger send buffer")
    with served_connection(server) as client:
        memory = re.search(r"skmem:\(([^)]*)\)", server_side(server, client, "-m"))
    assert memory is not None
    fields = dict(re.findall(r"([a-z_]+)(\d+)", memory.group(1)))
    assert int(fields["tb"]) == fixed, memory.group(0)


async def test_connections_have_tcp_nodelay() -> None:
    """Small responses are not held back by Nagle's algorithm: asyncio's transport sets
    TCP_NODELAY on every connection, which the services' handler relies on instead of
    setting it a second time as aiohttp's does."""

    async def nodelay(request: web.Request) -> web.Response:
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        return web.Response(text=str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))

    app = web.Application()
    app.router.add_get("/", nodelay)
    sockets = bind_sockets("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    timeouts = ConnectionTimeouts(read_header=5.0, idle=5.0)
    async with serving(app, sockets, timeouts=timeouts, error_code=errors.UNSUPPORTED):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n1"), answer


LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (WARNING|INFO) ")


@pytest.mark.parametrize("service", SERVICES)
def test_an_address_in_use_is_one_line(service: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args, env = service_command(service, tmp_path, port)
        completed = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=REPOSITORY_ROOT,
            env=server_env(env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert completed.returncode == 2, completed.stderr
    # Start-up warnings about the configuration (the test users' cheap bcrypt cost) are
    # log records of their own; the failure itself is one line, with no traceback.
    not_logged = [line for line in completed.stderr.splitlines() if not LOG_RECORD.match(line)]
    assert not_logged == [
        f"{args[0]}: cannot listen on 127.0.0.1:{port}: "
        "address already in use (is another server running?)"
    ]
