"""The ``Authorization`` request header, parsed totally: the one copy of its grammar.

Both services read this header from unauthenticated clients, so every value must end in
a typed answer: no credentials, :class:`BasicCredentials`, :class:`BearerToken`, another
scheme, or :class:`MalformedAuthorization`. Nothing else may escape, whatever the bytes
(aiohttp hands non-UTF-8 header bytes over as surrogate escapes). Error messages are
fixed texts: they never repeat the header, which holds a secret.

Grammar (RFC 9110 §11.4, RFC 7617, RFC 6750): ``scheme 1*SP token68``; the scheme is
case-insensitive; a Basic token68 is strict base64 of UTF-8 ``user ":" password``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

# RFC 9110 token68, ASCII only: this also rejects every surrogate-escaped byte.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)
_SCHEME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)


class MalformedAuthorization(ValueError):
    """An ``Authorization`` header that cannot be understood; ``scheme`` is its scheme
    (lower case) when that much was readable, else ``""``."""

    def __init__(self, message: str, scheme: str = "") -> None:
        super().__init__(message)
        self.scheme = scheme


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """A user name and password from ``Basic``; either may be empty."""

    user: str
    password: str = field(repr=False)

    @property
    def empty(self) -> bool:
        """``Basic Og==``: what some clients send when they have no credentials."""
        return not self.user and not self.password


@dataclass(frozen=True, slots=True)
class BearerToken:
    """The opaque token of ``Bearer`` (ASCII token68; a JWT for the registry)."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OtherScheme:
    """Credentials of a scheme neither service speaks (``Negotiate``, ``Digest``…)."""

    scheme: str


Credentials = BasicCredentials | BearerToken | OtherScheme


def parse_authorization(header: str | None) -> Credentials | None:
    """The credentials of an ``Authorization`` value; None when there is none.

    Raises :class:`MalformedAuthorization` for anything that is not well formed.
    """
    if header is None or not header.strip(" \t"):
        return None
    scheme, _, rest = header.strip(" \t").partition(" ")
    if not _SCHEME.fullmatch(scheme):
        raise MalformedAuthorization("malformed authorization scheme")
    scheme = scheme.lower()
    if scheme == "basic":
        return _basic(rest.strip(" \t"))
    if scheme == "bearer":
        token = rest.strip(" \t")
        if not _TOKEN68.fullmatch(token):
            raise MalformedAuthorization("malformed bearer token", scheme)
        return BearerToken(token)
    return OtherScheme(scheme)


def _basic(encoded: str) -> BasicCredentials:
    if not _TOKEN68.fullmatch(encoded):
        raise MalformedAuthorization("malformed Basic credentials", "basic")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise MalformedAuthorization("malformed Basic credentials", "basic") from None
    user, colon, password = decoded.partition(":")
    if not colon:
        raise MalformedAuthorization("Basic credentials without ':'", "basic")
    return BasicCredentials(user, password)
