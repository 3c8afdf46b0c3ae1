"""Refresh tokens: signed, stateless, bound to user, service and the user's credential.

Refresh tokens are JWTs signed with the token key (so they survive restarts and work
across replicas sharing the key) but can never pass as access tokens: their ``typ`` is
``refresh+jwt``, their audience is ``tokenauth-refresh:<issuer>`` (which no service may
be named) and they carry no access. Each use checks, against the users files of the moment,
that the user still exists with the same password (via the credential id in the token);
removing the user or changing the password therefore ends all of their refresh tokens.
They stay reusable until they expire, as the docker CLI keeps the one from ``docker login``.
They are signed with the current key and verified with every published one (previous,
current, next), so a key rotation ends only those signed two rotations ago.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from shared.token import Claims, TokenError
from tokenauth.authn.base import Authenticator
from tokenauth.config import REFRESH_AUDIENCE_PREFIX
from tokenauth.signing import SigningKeys

TOKEN_TYPE = "refresh+jwt"  # noqa: S105 - a JWT "typ", not a secret


class RefreshError(Exception):
    """A refresh token that is invalid, expired, for another service or for a gone user."""


class RefreshTokens:
    def __init__(
        self,
        signer: SigningKeys,
        *,
        issuer: str,
        lifetime: timedelta,
        authenticator: Authenticator,
    ) -> None:
        self.signer = signer
        self.issuer = issuer
        self.audience = REFRESH_AUDIENCE_PREFIX + issuer
        self.lifetime = lifetime
        self.authenticator = authenticator

    def issue(self, user: str, service: str) -> str | None:
        """A refresh token for ``user`` at ``service``; None if the user has no credential."""
        credential = self.authenticator.credential_id(user)
        if credential is None:
            return None
        claims = Claims.issue(
            issuer=self.issuer,
            subject=user,
            audience=self.audience,
            lifetime=self.lifetime,
            extra={"service": service, "credential": credential},
        )
        return self.signer.sign(claims, typ=TOKEN_TYPE, x5c=False)  # never goes to a registry

    def redeem(self, token: str, service: str) -> str:
        """The user a refresh token stands for; raises :class:`RefreshError`."""
        try:
            verifier = self.signer.verifier(self.issuer, self.audience, TOKEN_TYPE)
            claims = verifier.verify(token)
        except TokenError as error:
            raise RefreshError(str(error)) from None
        if claims.extra.get("service") != service:
            raise RefreshError("refresh token was issued for another service")
        current = self.authenticator.credential_id(claims.subject)
        bound = claims.extra.get("credential")
        if current is None or not isinstance(bound, str) or not hmac.compare_digest(current, bound):
            raise RefreshError("the user or their password changed since the token was issued")
        return claims.subject
