"""``http.debug.addr``: a listener of its own, apart from the API, as in Distribution."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.portside_servers import filesystem_registry, free_port


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_debug_listener_is_apart_from_the_api(tmp_path: Path) -> None:
    debug_port = free_port()
    registry = filesystem_registry(tmp_path, REGISTRY_HTTP_DEBUG_ADDR=f"127.0.0.1:{debug_port}")
    registry.start()
    try:
        assert _status(f"{registry.url}/v2/") == 200
        # The debug listener answers HTTP, and never the API.
        assert _status(f"http://127.0.0.1:{debug_port}/v2/") == 404
    finally:
        registry.stop()
    log = registry.log()
    assert f"debug server listening on http://127.0.0.1:{debug_port}" in log
    assert "http.debug.addr is accepted but not implemented" not in log


def test_a_taken_debug_address_stops_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        registry = filesystem_registry(tmp_path, REGISTRY_HTTP_DEBUG_ADDR=f"127.0.0.1:{port}")
        with pytest.raises(AssertionError, match="exited at start-up"):
            registry.start()
    assert str(port) in registry.log()
