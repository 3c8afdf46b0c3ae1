"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backing_services import stop_shared_services


@pytest.fixture(scope="session", autouse=True)
def _stop_backing_services() -> Iterator[None]:
    """The moto and Redis servers start on first use (tests.support.backing_services);
    whichever started are stopped when the session ends."""
    yield
    stop_shared_services()
