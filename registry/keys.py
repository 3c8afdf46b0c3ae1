"""Typed keys for what the app and each request carry (aiohttp AppKey/RequestKey)."""

from __future__ import annotations

from aiohttp import web

from registry.config import RegistryConfig
from registry.health.monitor import HealthMonitor
from registry.metrics import RegistryMetrics
from registry.proxy.mirror import Mirrors
from registry.routing import RouteMatch
from registry.storage.registry import Registry

CONFIG = web.AppKey("config", RegistryConfig)
STORAGE = web.AppKey("storage", Registry)
# The health checks of this process (registry.health).
HEALTH = web.AppKey("health", HealthMonitor)
# Whether this process runs background upkeep such as upload purging.
MAINTENANCE = web.AppKey("maintenance", bool)
# The app's metrics, only when http.debug.prometheus.enabled.
METRICS = web.AppKey("metrics", RegistryMetrics)
# The pull-through cache's upstreams (none unless ``proxy`` is configured).
MIRRORS = web.AppKey("mirrors", Mirrors)
ROUTE = web.RequestKey("route", RouteMatch)
# Whether the caller may read a mount's source repository; without it, no mount.
MOUNT_ALLOWED = web.RequestKey("mount_allowed", bool)
