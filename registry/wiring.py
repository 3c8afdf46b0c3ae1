"""Storage built from configuration: the one module outside ``registry.storage`` that
knows its drivers and caches. Everything else gets a ready ``Registry``.

Each backend is an entry of an explicit table (no import-time registration), and
storage itself never reads ``registry.config``: settings are handed over here.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from registry.config import RegistryConfig
from registry.metrics import RegistryMetrics
from registry.storage.cache.base import BlobDescriptorCache
from registry.storage.cache.memory import MemoryBlobDescriptorCache
from registry.storage.cache.metered import MeteredBlobDescriptorCache
from registry.storage.driver.base import StorageDriver
from registry.storage.driver.filesystem import FilesystemDriver, check_writable_root
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.driver.metered import MeteredDriver
from registry.storage.manifests import ForeignURLPolicy
from registry.storage.pulls import FLUSH_INTERVAL
from registry.storage.registry import Registry
from registry.storage.retention import DeleteTagsRule, NewestRule, RetentionPolicy


def _filesystem(config: RegistryConfig) -> StorageDriver:
    settings = config.storage.filesystem
    assert settings is not None
    return FilesystemDriver(
        settings.rootdirectory, max_threads=min(settings.maxthreads, 64), fsync=settings.fsync
    )


def _inmemory(config: RegistryConfig) -> StorageDriver:
    return InMemoryDriver()


def _s3(config: RegistryConfig) -> StorageDriver:
    # Imported when configured: aioboto3 alone takes most of a second to import.
    from registry.storage.driver.s3 import S3Driver

    settings = config.storage.s3
    assert settings is not None
    return S3Driver(settings, redirect=config.storage.redirect.active)


DRIVERS: dict[str, Callable[[RegistryConfig], StorageDriver]] = {
    "filesystem": _filesystem,
    "inmemory": _inmemory,
    "s3": _s3,
}


def create_driver(config: RegistryConfig, metrics: RegistryMetrics | None = None) -> StorageDriver:
    """The configured driver; with ``metrics``, every operation of it is timed there."""
    try:
        factory = DRIVERS[config.storage.driver_name]
    except KeyError:
        raise ValueError(
            f"storage driver {config.storage.driver_name!r} is not supported yet"
        ) from None
    driver = factory(config)
    return driver if metrics is None else MeteredDriver(driver, metrics.observe_storage)


def check_storage(config: RegistryConfig) -> None:
    """Raise StorageUnwritable when the configured storage cannot take writes, before
    the registry starts (filesystem driver; a read-only registry is not checked)."""
    settings = config.storage.filesystem
    if config.storage.maintenance.readonly.enabled:
        return
    if config.storage.driver_name == "filesystem" and settings is not None:
        check_writable_root(settings.rootdirectory)


def create_blob_descriptor_cache(
    config: RegistryConfig, metrics: RegistryMetrics | None = None
) -> BlobDescriptorCache | None:
    """``storage.cache.blobdescriptor``; None when no cache is configured. With
    ``metrics``, its lookups are counted there as hits and misses."""
    kind = config.storage.cache.blob_descriptor_cache
    cache: BlobDescriptorCache
    if kind == "inmemory":
        cache = MemoryBlobDescriptorCache(config.storage.cache.blobdescriptorsize)
    elif kind == "redis":
        from registry.storage.cache.redis import RedisBlobDescriptorCache
        from shared.redis_client import redis_client

        cache = RedisBlobDescriptorCache(
            redis_client(config.redis),
            where=f"Redis at {config.redis.describe()}",
            errors=None if metrics is None else metrics.cache_errors,
        )
    else:
        return None
    if metrics is None:
        return cache
    return MeteredBlobDescriptorCache(cache, hits=metrics.cache_hits, misses=metrics.cache_misses)


def create_storage(
    config: RegistryConfig,
    metrics: RegistryMetrics | None = None,
    *,
    deleting_processes: int = 0,
) -> Registry:
    """The storage facade over the configured driver, without its cache (see
    ``create_blob_descriptor_cache``: the app opens and closes it separately); with
    ``metrics``, driver operations are timed there. ``deleting_processes``: the
    filesystem driver's ``delete_many`` runs in that many processes of their own
    (``FilesystemDriver.delete_in_children``; a one-shot collection's)."""
    driver = create_driver(config, metrics)
    if deleting_processes and isinstance(driver, FilesystemDriver):
        driver.delete_in_children(deleting_processes)
    urls = config.validation.manifests.urls
    # A read-only registry writes nothing, pull times included.
    readonly = config.storage.maintenance.readonly.enabled
    return Registry(
        driver,
        ForeignURLPolicy.from_patterns(urls.allow, urls.deny),
        pull_resolution=None
        if readonly
        else config.storage.retention.pullresolution.total_seconds(),
        # A read-only registry refreshes nothing (and takes no pushes to protect).
        gc_grace=0.0 if readonly else config.storage.gc.graceperiod.total_seconds(),
        # Instances that share the secret continue each other's uploads' hashes.
        secret=config.http.secret.encode() if config.http.secret else None,
    )


def retention_policies(config: RegistryConfig) -> tuple[RetentionPolicy, ...]:
    """``storage.retention.policies`` in storage's terms (seconds, tuples)."""

    def seconds(value: datetime.timedelta | None) -> float | None:
        return None if value is None else value.total_seconds()

    # A stored pull time lags the last pull by up to the resolution (it is rewritten only
    # when that much older) plus one flush interval: keeppulledwithin is widened by as
    # much, so a tag pulled within the window is never taken for one that was not.
    pull_lag = config.storage.retention.pullresolution.total_seconds() + FLUSH_INTERVAL

    def widened(value: datetime.timedelta | None) -> float | None:
        return None if value is None else value.total_seconds() + pull_lag

    return tuple(
        RetentionPolicy(
            repositories=tuple(policy.repositories),
            keep_tags=tuple(policy.keeptags),
            keep_newest=tuple(NewestRule(tuple(k.tags), k.count) for k in policy.keepnewest),
            keep_pulled_within=widened(policy.keeppulledwithin),
            delete_tags=tuple(
                DeleteTagsRule(tuple(d.tags), d.olderthan.total_seconds())
                for d in policy.deletetags
            ),
            delete_untagged_older_than=seconds(policy.deleteuntaggedolderthan),
        )
        for policy in config.storage.retention.policies
    )


def mirror_retention_policies(config: RegistryConfig) -> tuple[RetentionPolicy, ...]:
    """The pull-through cache's ``ttl`` as retention policies: under each upstream's
    prefix, a cached tag stored and last pulled more than ``ttl`` ago is dropped, and so
    is a cached manifest no tag names any more (``garbage-collect`` then reclaims their
    blobs). Pull times are widened as in ``retention_policies``."""
    pull_lag = config.storage.retention.pullresolution.total_seconds() + FLUSH_INTERVAL
    policies = []
    # Longest prefix first, as the mirror routes names: a repository is governed by the
    # first policy that matches it.
    for upstream in sorted(config.proxy.all_upstreams(), key=lambda u: -len(u.prefix)):
        ttl = upstream.ttl.total_seconds()
        pattern = f"{upstream.prefix}/**" if upstream.prefix else "**"
        if not ttl:
            policies.append(RetentionPolicy(repositories=(pattern,)))  # kept forever
            continue
        policies.append(
            RetentionPolicy(
                repositories=(pattern,),
                keep_pulled_within=ttl + pull_lag,
                delete_tags=(DeleteTagsRule(("*",), ttl),),
                delete_untagged_older_than=ttl,
            )
        )
    return tuple(policies)
