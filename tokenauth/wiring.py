"""Builds the authenticator and authorizer chains a configuration names, in its order.

Each kind is chosen from an explicit table, not by import side effects; a file or
setting that cannot be used raises ``ConfigError`` naming its key, so a broken
configuration stops the service before it listens.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.config import ConfigError
from shared.credentials import HtpasswdAuthenticator
from tokenauth.acl import AclError, AclFile
from tokenauth.authn.base import Authenticator
from tokenauth.authn.chain import AuthenticatorChain
from tokenauth.authn.external import ExternalAuthenticator
from tokenauth.authn.htpasswd import HtpasswdUsers
from tokenauth.authn.ldap import LdapAuthenticator, LdapSetupError
from tokenauth.authn.robots import RobotAccounts
from tokenauth.authz import AclAuthorizer, Authorizer, AuthorizerChain
from tokenauth.authz_external import ExternalAuthorizer
from tokenauth.config import TokenAuthConfig, authenticator_order, authorizer_order
from tokenauth.metrics import TokenAuthMetrics
from tokenauth.robots import RobotError


def _users(config: TokenAuthConfig, metrics: TokenAuthMetrics | None) -> Authenticator:
    try:
        users = HtpasswdAuthenticator(
            config.users,
            cache_ttl=config.credentialcache.ttl,
            cache_entries=config.credentialcache.maxentries,
            concurrent_checks=config.ratelimit.concurrentchecks,
        )
    except OSError as error:
        raise ConfigError(f"users: {error}") from None
    if metrics is not None:
        users.on_check = metrics.bcrypt_checked
        users.on_reload = metrics.users_reloaded
    return HtpasswdUsers(users)


def _ldap(config: TokenAuthConfig, metrics: TokenAuthMetrics | None) -> Authenticator:
    assert config.ldap is not None  # only called when configured
    try:
        ldap = LdapAuthenticator(config.ldap, config.credentialcache)
    except LdapSetupError as error:
        raise ConfigError(f"ldap: {error}") from None
    if metrics is not None:
        ldap.on_check = metrics.authenticator_checked
    return ldap


def _extauth(config: TokenAuthConfig, metrics: TokenAuthMetrics | None) -> Authenticator:
    assert config.extauth is not None
    external = ExternalAuthenticator(config.extauth)
    if metrics is not None:
        external.on_check = metrics.authenticator_checked
    return external


def _robots(config: TokenAuthConfig, metrics: TokenAuthMetrics | None) -> Authenticator:
    try:
        return RobotAccounts(config.robots)
    except RobotError as error:
        raise ConfigError(f"robots: {error}") from None


_AUTHENTICATORS: dict[str, Callable[[TokenAuthConfig, TokenAuthMetrics | None], Authenticator]] = {
    "users": _users,
    "ldap": _ldap,
    "extauth": _extauth,
    "robots": _robots,
}


def authenticators(config: TokenAuthConfig, metrics: TokenAuthMetrics | None) -> AuthenticatorChain:
    return AuthenticatorChain(
        [_AUTHENTICATORS[name](config, metrics) for name in authenticator_order(config)]
    )


def authorizers(config: TokenAuthConfig, metrics: TokenAuthMetrics | None) -> AuthorizerChain:
    members: list[Authorizer] = []
    for name in authorizer_order(config):
        if name == "acl":
            try:
                acl = AclFile(config.acl)
            except (OSError, AclError) as error:
                raise ConfigError(f"acl: {error}") from None
            if metrics is not None:
                acl.on_reload = metrics.acl_reloaded
            members.append(AclAuthorizer(acl))
        else:
            assert config.extauthz is not None
            members.append(ExternalAuthorizer(config.extauthz))
    return AuthorizerChain(members)
