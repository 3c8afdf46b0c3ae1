"""The cheapest possible pull-through forwarders, as yardsticks for scenario 9's cold pull:
what any mirror could reach on this machine, against the same upstream and client.

``python -m bench.forwarder MODE PORT UPSTREAM_URL SPOOL_DIR`` serves each connection in
a thread of its own: it reads one request, asks the upstream (plain HTTP) for the same
path, and passes the answer on, adding ``Connection: close``. The body goes:

- ``cache``: received into one reused buffer, hashed with SHA-256, written to a file in
  ``SPOOL_DIR`` and sent, every step a call that releases the GIL: what a verifying
  cache must do at the least, with no event loop, no parser, no copy of its own;
- ``splice``: from socket to socket through a pipe (``splice``), never entering user
  space, neither hashed nor stored: the floor of any forwarder.

No digest is checked and nothing is committed: the figures bound a mirror from above.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import sys
import threading
from urllib.parse import urlsplit

BUFFER = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl: a pipe of BUFFER bytes, so one splice moves up to that


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The header block and any body bytes received with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _forward(client: socket.socket, mode: str, upstream: tuple[str, int], spool: str) -> None:
    head, _ = _read_head(client)
    method, path, _ = head.split(b"\r\n")[0].split(b" ")
    with socket.create_connection(upstream) as up:
        up.sendall(
            method + b" " + path + b" HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n"
        )
        answer, body = _read_head(up)
        lines = [answer.split(b"\r\n")[0]]
        length = 0
        for line in answer.split(b"\r\n")[1:]:
            name = line.partition(b":")[0].strip().lower()
            if name == b"content-length":
                length = int(line.partition(b":")[2])
            if name not in (b"connection", b"keep-alive"):
                lines.append(line)
        lines.append(b"Connection: close")
        client.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        if mode == "splice":
            client.sendall(body)
            _splice(up, client, length - len(body))
        else:
            _cache(up, client, body, length, spool)


def _cache(up: socket.socket, client: socket.socket, body: bytes, length: int, spool: str) -> None:
    hasher = hashlib.sha256()
    fd = os.open(os.path.join(spool, str(threading.get_ident())), os.O_WRONLY | os.O_CREAT)
    try:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        received, left = len(body), length - len(body)
        buffer[:received] = body
        while True:
            piece = view[:received]
            hasher.update(piece)  # releases the GIL for pieces over 2 KiB
            os.write(fd, piece)
            client.sendall(piece)
            if left <= 0:
                return
            received = up.recv_into(buffer, min(left, BUFFER))
            if not received:
                raise ConnectionError("the upstream ended early")
            left -= received
    finally:
        os.close(fd)


def _splice(up: socket.socket, client: socket.socket, left: int) -> None:
    read, write = os.pipe()
    try:
        fcntl.fcntl(write, _F_SETPIPE_SZ, BUFFER)
        while left > 0:
            moved = os.splice(up.fileno(), write, min(left, BUFFER))
            if not moved:
                raise ConnectionError("the upstream ended early")
            left -= moved
            while moved:
                moved -= os.splice(read, client.fileno(), moved)
    finally:
        os.close(read)
        os.close(write)


def _serve(client: socket.socket, mode: str, upstream: tuple[str, int], spool: str) -> None:
    # A readiness probe, or a client gone, ends its own connection only.
    with client, contextlib.suppress(OSError, ValueError):
        _forward(client, mode, upstream, spool)


def main(argv: list[str]) -> None:
    mode, port, upstream_url, spool = argv
    if mode not in ("cache", "splice"):
        raise SystemExit(f"unknown mode {mode!r}: cache or splice")
    parts = urlsplit(upstream_url)
    upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
    server = socket.create_server(("127.0.0.1", int(port)), backlog=128)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve, args=(client, mode, upstream, spool), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
