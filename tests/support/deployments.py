"""Deployments of portside's registry with access control, written and started the way
docs/auth.md tells an operator to: token mode (registry + tokenauth) and htpasswd mode.

Token mode: ``tokenauth keygen`` makes the signing key and certificate, the registry trusts
the certificate (``auth.token.rootcertbundle``) and sends clients to tokenauth's realm.
Users are alice, bob and admin; the ACL lets alice own ``alice/*``, bob pull ``alice/*``,
admin do everything, and anyone — anonymous included — pull ``public/*``. Robot accounts
(``tokenauth robot``, none at start) may at most pull and push ``ci/*``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.htpasswd import format_htpasswd_line
from shared.jose_keys import load_certificates, load_private_key
from shared.token import TokenSigner
from tests.support.portside_servers import ServerProcess, free_port, run_python_module

SERVICE = "portside-e2e"
ISSUER = "portside-e2e-issuer"
HTPASSWD_REALM = "portside e2e realm"
PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw", "admin": "admin-secret-pw"}

ACL = """\
acl:
  - match: {account: admin}
    actions: ["*"]
    comment: admin may do everything, publishing public/* included
  - match: {account: alice, name: "alice/*"}
    actions: ["*"]
    comment: alice owns alice/*
  - match: {account: bob, name: "alice/*"}
    actions: [pull]
    comment: bob may pull alice's images, never push them
  - match: {name: "public/*"}
    actions: [pull]
    comment: everyone, even anonymous, may pull public/*
  - match: {account: "robot$*", name: "ci/*"}
    actions: [pull, push]
    comment: robots may at most pull and push ci/*, each within its own rights
"""


@dataclass
class TokenDeployment:
    """A running registry in token mode and the tokenauth that issues its tokens."""

    directory: Path
    registry: ServerProcess
    tokenauth: ServerProcess
    # host:port of each service's debug listener, serving /metrics (metrics=True only).
    registry_debug: str | None = None
    tokenauth_debug: str | None = None

    @property
    def realm(self) -> str:
        return self.tokenauth.url + "/auth"

    def signer(self) -> TokenSigner:
        """A signer holding tokenauth's own key: tokens the registry must trust."""
        key = load_private_key((self.directory / "token.key").read_bytes())
        return TokenSigner(key, load_certificates((self.directory / "token.crt").read_bytes()))

    def stop(self) -> None:
        self.registry.stop()
        self.tokenauth.stop()


@dataclass
class HtpasswdDeployment:
    """A running registry in htpasswd mode, configured entirely by environment variables."""

    directory: Path
    registry: ServerProcess

    def stop(self) -> None:
        self.registry.stop()


def _debug(address: str | None) -> dict[str, object]:
    if address is None:
        return {}
    return {"debug": {"addr": address, "prometheus": {"enabled": True}}}


def _merge(config: dict[str, Any], settings: Mapping[str, Any] | None) -> None:
    """More top-level sections into ``config``; a section named twice is merged, one
    level deep."""
    for section, value in (settings or {}).items():
        current = config.get(section)
        if isinstance(current, dict) and isinstance(value, Mapping):
            config[section] = {**current, **value}
        else:
            config[section] = value


def write_token_files(directory: Path) -> None:
    """What every token-mode deployment shares: the signing key and certificate from
    ``tokenauth keygen``, the users file and the ACL, in ``directory``."""
    run_python_module(
        "tokenauth",
        "keygen",
        "--key",
        str(directory / "token.key"),
        "--certificate",
        str(directory / "token.crt"),
    )
    (directory / "users.htpasswd").write_text(
        "".join(format_htpasswd_line(u, p) + "\n" for u, p in PASSWORDS.items())
    )
    (directory / "acl.yml").write_text(ACL)


def tokenauth_config(
    address: str, settings: Mapping[str, Any] | None = None, debug: str | None = None
) -> dict[str, Any]:
    """A tokenauth config listening on ``address``, reading ``write_token_files``' files
    (relative to its own directory); ``settings`` are more top-level sections."""
    config: dict[str, Any] = {
        "http": {"addr": address, **_debug(debug)},
        "token": {
            "issuer": ISSUER,
            "services": [SERVICE],
            "key": "token.key",
            "certificate": "token.crt",
        },
        "users": ["users.htpasswd"],
        "acl": "acl.yml",
        "robots": "robots.yml",
    }
    _merge(config, settings)
    return config


def registry_token_auth(realm: str, directory: Path) -> dict[str, Any]:
    """The registry's ``auth`` section trusting ``write_token_files``' certificate."""
    return {
        "token": {
            "realm": realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(directory / "token.crt"),
        }
    }


def start_token_deployment(
    directory: Path,
    registry_settings: Mapping[str, Any] | None = None,
    *,
    metrics: bool = False,
    tokenauth_settings: Mapping[str, Any] | None = None,
) -> TokenDeployment:
    """Token mode; ``registry_settings`` and ``tokenauth_settings`` are more top-level
    sections of each service's config (a section named twice is merged, one level deep);
    with ``metrics``, each service serves /metrics on a debug address."""
    write_token_files(directory)
    auth_port, registry_port = free_port(), free_port()
    auth_debug = f"127.0.0.1:{free_port()}" if metrics else None
    registry_debug = f"127.0.0.1:{free_port()}" if metrics else None
    # JSON is YAML: no quoting surprises in paths.
    config = tokenauth_config(f"127.0.0.1:{auth_port}", tokenauth_settings, auth_debug)
    (directory / "tokenauth.yml").write_text(json.dumps(config))
    tokenauth = ServerProcess(
        "tokenauth",
        ["tokenauth", "serve", str(directory / "tokenauth.yml")],
        auth_port,
        "/health",
        directory / "tokenauth.log",
    )
    registry_config: dict[str, Any] = {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
        "http": {"addr": f"127.0.0.1:{registry_port}", **_debug(registry_debug)},
        "auth": registry_token_auth(f"{tokenauth.url}/auth", directory),
    }
    _merge(registry_config, registry_settings)
    (directory / "registry.yml").write_text(json.dumps(registry_config))
    registry = ServerProcess(
        "registry",
        ["registry", "serve", str(directory / "registry.yml")],
        registry_port,
        "/",
        directory / "registry.log",
    )
    tokenauth.start()
    try:
        registry.start()
    except BaseException:
        tokenauth.stop()
        raise
    return TokenDeployment(directory, registry, tokenauth, registry_debug, auth_debug)


def start_htpasswd_deployment(
    directory: Path, settings: Mapping[str, str] | None = None
) -> HtpasswdDeployment:
    """The guide's native basic auth: ``htpasswd -Bbn`` lines and ``REGISTRY_AUTH*``;
    ``settings`` are more ``REGISTRY_*`` variables."""
    users = directory / "htpasswd"
    users.write_text(
        "".join(
            run_python_module("registry", "htpasswd", "-Bbn", user, password)
            for user, password in PASSWORDS.items()
            if user != "admin"
        )
    )
    port = free_port()
    registry = ServerProcess(
        "registry",
        ["registry", "serve"],
        port,
        "/",
        directory / "registry.log",
        env={
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(directory / "data"),
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": HTPASSWD_REALM,
            "REGISTRY_AUTH_HTPASSWD_PATH": str(users),
            **(settings or {}),
        },
    )
    registry.start()
    return HtpasswdDeployment(directory, registry)
