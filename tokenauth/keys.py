"""Typed application state of the tokenauth app."""

from __future__ import annotations

from aiohttp import web

from tokenauth.config import TokenAuthConfig
from tokenauth.health import ServiceHealth
from tokenauth.issuer import TokenIssuer
from tokenauth.metrics import TokenAuthMetrics

CONFIG = web.AppKey("config", TokenAuthConfig)
ISSUER = web.AppKey("issuer", TokenIssuer)
HEALTH = web.AppKey("health", ServiceHealth)
# Only when http.debug.prometheus.enabled.
METRICS = web.AppKey("metrics", TokenAuthMetrics)
