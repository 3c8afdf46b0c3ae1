"""Choose the access controller named by ``auth:`` — an explicit table, like drivers."""

from __future__ import annotations

from registry.auth.base import AccessController
from registry.auth.htpasswd import HtpasswdAccessController
from registry.auth.token import TokenAccessController
from registry.config import RegistryConfig


def create_access_controller(config: RegistryConfig) -> AccessController | None:
    """The configured controller, or None when the registry is open."""
    method = config.auth.method_name
    if method is None:
        return None
    if method == "htpasswd" and config.auth.htpasswd is not None:
        return HtpasswdAccessController(config.auth.htpasswd, config.redis)
    if method == "token" and config.auth.token is not None:
        return TokenAccessController(config.auth.token)
    raise ValueError(f"auth.{method} is not supported")
