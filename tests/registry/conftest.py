"""Fixtures that run the real registry app on a loopback socket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from registry.app import create_app
from registry.config import load_config

RegistryClient = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[RegistryClient]]


@pytest.fixture
def registry_environ(tmp_path: Path) -> dict[str, str]:
    """The environment overrides of a test registry: filesystem storage in tmp, deletes on."""
    return {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "registry-data"),
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
    }


@pytest.fixture
async def make_registry(
    aiohttp_client: Callable[[web.Application], Awaitable[RegistryClient]],
    registry_environ: dict[str, str],
) -> ClientFactory:
    """Start a registry with the default test environment plus ``overrides``."""

    async def start(overrides: Mapping[str, str] | None = None) -> RegistryClient:
        config = load_config(None, {**registry_environ, **(overrides or {})})
        return await aiohttp_client(create_app(config))

    return start


@pytest.fixture
async def registry(make_registry: ClientFactory) -> RegistryClient:
    """A running registry on loopback with filesystem storage and deletion enabled."""
    return await make_registry()
