"""Build the configured storage driver: an explicit table, no import-time registration."""

from __future__ import annotations

from collections.abc import Callable

from registry.config import RegistryConfig
from registry.storage.driver.base import StorageDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.driver.s3 import S3Driver


def _filesystem(config: RegistryConfig) -> StorageDriver:
    settings = config.storage.filesystem
    assert settings is not None
    return FilesystemDriver(
        settings.rootdirectory, max_threads=min(settings.maxthreads, 64), fsync=settings.fsync
    )


def _inmemory(config: RegistryConfig) -> StorageDriver:
    return InMemoryDriver()


def _s3(config: RegistryConfig) -> StorageDriver:
    settings = config.storage.s3
    assert settings is not None
    return S3Driver(settings, redirect=config.storage.redirect.active)


DRIVERS: dict[str, Callable[[RegistryConfig], StorageDriver]] = {
    "filesystem": _filesystem,
    "inmemory": _inmemory,
    "s3": _s3,
}


def create_driver(config: RegistryConfig) -> StorageDriver:
    try:
        factory = DRIVERS[config.storage.driver_name]
    except KeyError:
        raise ValueError(
            f"storage driver {config.storage.driver_name!r} is not supported yet"
        ) from None
    return factory(config)
