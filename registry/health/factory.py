"""The health checks a configuration asks for (Distribution's ``RegisterHealthChecks``).

``health.storagedriver`` (when enabled), every ``health.file``, ``health.http`` and
``health.tcp`` entry, and Redis whenever ``redis`` is configured (unless
``health.redis.disabled``). Checks are named as Distribution names them:
``storagedriver_<driver>``, the file's path, the URI (without credentials), the address;
the Redis check is ``redis``.
"""

from __future__ import annotations

from registry.config import RegistryConfig
from registry.config_health import interval_or_default, public_uri
from registry.health import checks
from registry.health.monitor import PeriodicCheck
from registry.storage.registry import Registry


def api_is_gated(config: RegistryConfig) -> bool:
    """Whether any check that can make the API answer 503 is configured."""
    health = config.health
    return health.storagedriver.enabled or bool(health.file or health.http or health.tcp)


def create_checks(config: RegistryConfig, storage: Registry) -> list[PeriodicCheck]:
    health = config.health
    created: list[PeriodicCheck] = []
    if health.storagedriver.enabled:
        created.append(
            PeriodicCheck(
                "storagedriver_" + config.storage.driver_name,
                checks.storage_check(storage),
                interval_or_default(health.storagedriver.interval),
                health.storagedriver.threshold,
            )
        )
    if config.redis.configured and not health.redis.disabled:
        # Readiness only: the blob-descriptor cache falls back to storage while Redis is
        # down, so the API keeps serving (see docs/operations.md#health).
        created.append(
            PeriodicCheck(
                "redis",
                checks.redis_check(config.redis),
                interval_or_default(health.redis.interval),
                health.redis.threshold,
                gates_api=False,
            )
        )
    for file in health.file:
        created.append(
            PeriodicCheck(
                file.file, checks.file_check(file.file), interval_or_default(file.interval)
            )
        )
    for http in health.http:
        created.append(
            PeriodicCheck(
                public_uri(http.uri),
                checks.http_check(
                    http.uri, http.headers, http.statuscode or 200, http.timeout.total_seconds()
                ),
                interval_or_default(http.interval),
                http.threshold,
                timeout=http.timeout.total_seconds(),
            )
        )
    for tcp in health.tcp:
        created.append(
            PeriodicCheck(
                tcp.addr,
                checks.tcp_check(tcp.addr, tcp.timeout.total_seconds()),
                interval_or_default(tcp.interval),
                tcp.threshold,
                timeout=tcp.timeout.total_seconds(),
            )
        )
    return created
