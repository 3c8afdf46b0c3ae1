"""A minimal HTTP/1.1 peer for measuring the benchmark's own clients, run as a process.

``python -m bench.sink FILE`` listens on a loopback port (printed on the first line of
stdout): a request with a body is read and discarded (201), a GET is answered with FILE
by sendfile. What a client achieves against it is the most it can measure of a registry.
"""

from __future__ import annotations

import os
import socket
import socketserver
import sys

_BUFFER = 4 * 1024 * 1024
_MAX_HEAD = 64 * 1024


class _Handler(socketserver.BaseRequestHandler):
    request: socket.socket
    server: _Server

    def handle(self) -> None:
        buffer = bytearray(_BUFFER)
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                data = self.request.recv(65536)
                if not data or len(pending) > _MAX_HEAD:
                    return
                pending += data
            head, pending = pending.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if method == "GET":
                self._send_file()
                continue
            remaining = int(headers.get("content-length", "0")) - len(pending)
            pending = b""
            view = memoryview(buffer)
            while remaining > 0:
                received = self.request.recv_into(view, min(remaining, _BUFFER))
                if not received:
                    return
                remaining -= received
            self.request.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    def _send_file(self) -> None:
        size = os.path.getsize(self.server.path)
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        with open(self.server.path, "rb") as file:
            offset = 0
            while offset < size:
                offset += os.sendfile(self.request.fileno(), file.fileno(), offset, size - offset)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.path = path


def main() -> None:
    with _Server(sys.argv[1]) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
