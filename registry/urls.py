"""Absolute URLs for ``Location`` headers, as the client sees this registry.

Behind a TLS-terminating proxy the request arrives as plain http on an internal host;
``X-Forwarded-Proto``/``X-Forwarded-Host`` (or RFC 7239 ``Forwarded``) say what the client
used, so a registry never redirects a client to an internal host or to plain http.
"""

from __future__ import annotations

import re

from aiohttp import web

from registry.config import RegistryConfig

_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


def base_url(request: web.Request, config: RegistryConfig) -> str:
    """Scheme and host to prefix paths with; empty when URLs are to stay relative."""
    if config.http.host:
        return config.http.host.rstrip("/")
    if config.http.relativeurls:
        return ""
    scheme, host = _forwarded(request)
    scheme = scheme or _first(request.headers.get("X-Forwarded-Proto"))
    host = host or _first(request.headers.get("X-Forwarded-Host"))
    if scheme not in ("http", "https"):
        scheme = request.scheme
    if host is None or not _HOST.fullmatch(host):
        host = request.host if _HOST.fullmatch(request.host) else "localhost"
    return f"{scheme}://{host}"


def path_prefix(config: RegistryConfig) -> str:
    """The configured ``http.prefix`` without its trailing slash ("" for none)."""
    return "/" + config.http.prefix.strip("/") if config.http.prefix.strip("/") else ""


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None


def _forwarded(request: web.Request) -> tuple[str | None, str | None]:
    forwarded = request.headers.get("Forwarded")
    if not forwarded:
        return None, None
    scheme = host = None
    for pair in forwarded.split(",", 1)[0].split(";"):
        key, _, value = pair.strip().partition("=")
        value = value.strip('"')
        if key.lower() == "proto":
            scheme = value.lower()
        elif key.lower() == "host":
            host = value
    return scheme, host
