"""Listening sockets for both services: bound before the event loop starts, so that an
address already in use (or a host that does not resolve) is one line naming the address,
not a traceback, and listening with the system's largest accept backlog.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from pathlib import Path

# Where Linux keeps the largest backlog listen() honours; a larger value is truncated to it.
SOMAXCONN_PATH = Path("/proc/sys/net/core/somaxconn")


def listen_host_port(addr: str) -> tuple[str, int]:
    """Split a Go-style TCP address (both services' listen addresses, Redis's, health
    checks'): ``":5000"`` → ``("", 5000)`` (empty host: every
        interface, IPv4 and IPv6, as Go listens; asyncio and aiohttp read "" the same way),
        ``"localhost:5000"``, ``"0.0.0.0:5000"``, ``"[::]:5000"`` → ``("::", 5000)``."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError("expected HOST:PORT, such as :5000 or [::1]:5000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError("expected an IPv6 address between the brackets") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError("an IPv6 address needs brackets, such as [::1]:5000")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return host, int(port)


class ListenError(Exception):
    """The address cannot be listened on; the message names it and says why."""


def system_backlog() -> int:
    """The kernel's maximum accept backlog (``net.core.somaxconn``), as Go listens with.

    A burst of new connections larger than the backlog is dropped by the kernel and the
    clients retry after a second, so the default of asyncio/aiohttp (128) costs latency
    under load for nothing.
    """
    try:
        value = int(SOMAXCONN_PATH.read_text().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return value if value > 0 else socket.SOMAXCONN


def display_address(host: str | None, port: int) -> str:
    """``host:port`` as an operator wrote it (``[v6]:port``, ``*:port`` for every interface)."""
    if not host:
        return f"*:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_sockets(host: str | None, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound (not yet listening) TCP sockets for ``host`` (None or "": every interface).

    Mirrors ``loop.create_server``: one socket per address ``host`` resolves to, IPv6
    sockets IPv6-only so that ``::`` and ``0.0.0.0`` can both be bound, SO_REUSEADDR so a
    restart does not wait for TIME_WAIT, SO_REUSEPORT when several workers share the port.

    With SO_REUSEPORT each worker has an accept queue of its own and the kernel spreads
    new connections over them by hash. One listening socket shared by the workers was
    measured instead (docs/performance.md, h-bal-14): a burst of new connections went
    mostly, at times wholly, to whichever worker woke first.
    """
    where = display_address(host, port)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ListenError(f"cannot listen on {where}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                reason = error.strerror or str(error)
                if error.errno == errno.EADDRINUSE:
                    reason = "address already in use (is another server running?)"
                raise ListenError(f"cannot listen on {where}: {reason}") from None
    except BaseException:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        raise
    return sockets


def bind_unix(path: str) -> socket.socket:
    """A bound (not yet listening) Unix stream socket at ``path`` (``http.net: unix``).

    As Go's net.Listen, an existing file at ``path`` is an error, not replaced.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on unix:{path}: {error.strerror or error}") from None
    return sock
