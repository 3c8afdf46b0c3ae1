"""Build the configured storage driver: an explicit table, no import-time registration."""

from __future__ import annotations

from collections.abc import Callable

from registry.config import RegistryConfig
from registry.storage.driver.base import StorageDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver


def _filesystem(config: RegistryConfig) -> StorageDriver:
    settings = config.storage.filesystem
    assert settings is not None
    return FilesystemDriver(settings.rootdirectory, max_threads=min(settings.maxthreads, 64))


def _inmemory(config: RegistryConfig) -> StorageDriver:
    return InMemoryDriver()


DRIVERS: dict[str, Callable[[RegistryConfig], StorageDriver]] = {
    "filesystem": _filesystem,
    "inmemory": _inmemory,
}


def create_driver(config: RegistryConfig) -> StorageDriver:
    try:
        factory = DRIVERS[config.storage.driver_name]
    except KeyError:
        raise ValueError(
            f"storage driver {config.storage.driver_name!r} is not supported yet"
        ) from None
    return factory(config)
