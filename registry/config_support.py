"""Which of the registry's configuration keys portside acts on, and which of those an
operator set are ignored (``unsupported_settings``: start-up warns about each).

Kept apart from the schema (``registry.config``) because the list grows with every
feature; a key joins when the code reads it, so nothing configured is silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from shared import config as _config

if TYPE_CHECKING:
    from registry.config import RegistryConfig

_S3_KEYS_USED = (
    *("accesskey", "secretkey", "sessiontoken", "region", "regionendpoint", "forcepathstyle"),
    *("bucket", "encrypt", "keyid", "secure", "skipverify", "chunksize"),
    *("multipartcopychunksize", "multipartcopymaxconcurrency", "multipartcopythresholdsize"),
    *("rootdirectory", "storageclass", "useragent", "usedualstack", "accelerate"),
    *("objectacl", "maxretries", "retrydelay"),
)
_REDIS_KEYS_USED = (
    *("addr", "addrs", "username", "password", "db", "clientname", "protocol"),
    *("dialtimeout", "readtimeout", "writetimeout", "tls", "pool.maxactive", "poolsize"),
    *("pooltimeout", "maxactiveconns", "maxretries", "minretrybackoff", "maxretrybackoff"),
    *("mastername", "sentinelusername", "sentinelpassword"),
)
_PROXY_KEYS_USED = (
    *("remoteurl", "username", "password", "ttl", "servestale", "library", "timeout"),
    *("upstreams", "maxdownloads"),
)

# Key paths portside acts on; a changed key that is not one of these, under one, or an
# ancestor of one is reported by unsupported_settings. Extend as features land: a key
# joins when the code reads it, so nothing configured is silently ignored.
IMPLEMENTED = (
    "version",
    "log.level",
    "loglevel",
    "log.accesslog.disabled",
    "log.formatter",
    "log.fields",
    "storage.filesystem.rootdirectory",
    "storage.filesystem.maxthreads",
    "storage.filesystem.fsync",
    "storage.inmemory",
    "storage.delete.enabled",
    "storage.maintenance.uploadpurging",
    "storage.maintenance.readonly.enabled",
    "storage.redirect.disable",
    "storage.retention",
    "storage.gc.interval",
    "storage.gc.graceperiod",
    "storage.gc.priority",
    "http.addr",
    "http.debug.addr",
    "http.debug.prometheus.enabled",
    "http.debug.prometheus.path",
    "http.net",
    "http.draintimeout",
    "http.readheadertimeout",
    "http.idletimeout",
    "http.bodytimeout",
    "http.host",
    "http.prefix",
    "http.relativeurls",
    "http.headers",
    "http.trustedproxies",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.minimumtls",
    "http.tls.clientcas",
    "http.tls.clientauth",
    "http.tls.ciphersuites",
    "http.tls.letsencrypt",
    "http.http2.disabled",  # always in effect: aiohttp serves HTTP/1.1 only
    "catalog.maxentries",
    "auth.htpasswd",
    "auth.token",
    "validation.manifests.urls",
    "http.secret",
    "storage.redirect.enabled",
    "storage.cache.blobdescriptor",
    "storage.cache.blobdescriptorsize",
    "storage.cache.layerinfo",
    "health.storagedriver",
    "health.redis",
    "health.file",
    "health.http",
    "health.tcp",
    "notifications",
    *(f"proxy.{key}" for key in _PROXY_KEYS_USED),
    "ui",
    *(f"storage.s3.{key}" for key in _S3_KEYS_USED),
    *(f"redis.{key}" for key in _REDIS_KEYS_USED),
)


def unsupported_settings(config: RegistryConfig) -> list[str]:
    """The key paths set in ``config`` (differing from the default) that portside ignores."""

    def implemented(path: str) -> bool:
        return any(
            path == key or path.startswith(key + ".") or key.startswith(path + ".")
            for key in IMPLEMENTED
        )

    changed = _config.changed_settings(config)
    s3 = config.storage.s3
    if s3 is not None and "storage.s3" in changed:
        # A variant is reported as a whole; name the S3 keys given, so those ignored show.
        at = changed.index("storage.s3")
        defaults = {f.name: f.default for f in dataclasses.fields(s3)}
        changed[at : at + 1] = [
            f"storage.s3.{name}"
            for name, default in defaults.items()
            if getattr(s3, name) != default
        ]
    return [path for path in changed if not implemented(path)]
