"""``http.addr`` and Redis's ``addr``: Go-style host:port, as Distribution parses them."""

from __future__ import annotations

import pytest

from registry.config import listen_host_port


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (":5000", ("", 5000)),
        ("0.0.0.0:5000", ("0.0.0.0", 5000)),  # noqa: S104
        ("localhost:0", ("localhost", 0)),
        ("[::]:5000", ("::", 5000)),
        ("[::1]:443", ("::1", 443)),
        ("[fe80::1%eth0]:5000", ("fe80::1%eth0", 5000)),
    ],
)
def test_listen_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert listen_host_port(addr) == expected


@pytest.mark.parametrize(
    "addr", ["", "5000", "::1:5000", "[::1]", "[nothost]:1", "host:port", ":-1", ":65536"]
)
def test_listen_host_port_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match=r"expected|brackets"):
        listen_host_port(addr)
