"""Authentication: who is asking. Kept apart from authorization (``tokenauth.authz``).

``base`` says what an authenticator answers, ``chain`` asks the configured ones in order;
one module per kind: ``htpasswd`` (the ``users`` files), ``ldap``, ``external``.
"""

from tokenauth.authn.base import (
    DENIED,
    NOT_MINE,
    Authenticator,
    AuthenticatorUnavailable,
    Identity,
    Standing,
)
from tokenauth.authn.chain import AuthenticatorChain

__all__ = [
    "DENIED",
    "NOT_MINE",
    "Authenticator",
    "AuthenticatorChain",
    "AuthenticatorUnavailable",
    "Identity",
    "Standing",
]
