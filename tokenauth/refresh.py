"""Refresh tokens: signed, stateless, bound to user, service and the user's credential.

Refresh tokens are JWTs signed with the token key (so they survive restarts and work
across replicas sharing the key) but can never pass as access tokens: their ``typ`` is
``refresh+jwt``, their audience is ``tokenauth-refresh:<issuer>`` (which no service may
be named) and they carry no access. They name the authenticator that logged the user in
(``authn``; none: ``users``, as before it was named) and the id of the credential it
reported (``Standing.credential_id``); each use asks that authenticator for the account as
it is now, and refuses when it is gone or its credential id changed. So removing a user or
changing the password (htpasswd, robots) or removing or disabling the directory entry
(LDAP) ends their refresh tokens; an authenticator that reports no standing (the external
program) gets none. They stay reusable until they expire, as the docker CLI keeps the one
from ``docker login``.
They are signed with the current key and verified with every published one (previous,
current, next), so a key rotation ends only those signed two rotations ago.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from shared.token import Claims
from shared.token_errors import TokenError
from tokenauth.authn.base import Identity
from tokenauth.authn.chain import AuthenticatorChain
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
        authenticators: AuthenticatorChain,
    ) -> None:
        self.signer = signer
        self.issuer = issuer
        self.audience = REFRESH_AUDIENCE_PREFIX + issuer
        self.lifetime = lifetime
        self.authenticators = authenticators

    async def issue(self, identity: Identity, service: str) -> str | None:
        """A refresh token for ``identity`` at ``service``; None if its authenticator
        reports no standing for it (gone, or no refresh tokens offered)."""
        standing = await self.authenticators.standing(identity.authenticator, identity.account)
        if standing is None:
            return None
        claims = Claims.issue(
            issuer=self.issuer,
            subject=identity.account,
            audience=self.audience,
            lifetime=self.lifetime,
            extra={
                "service": service,
                "credential": standing.credential_id,
                "authn": identity.authenticator,
            },
        )
        return self.signer.sign(claims, typ=TOKEN_TYPE, x5c=False)  # never goes to a registry

    async def redeem(self, token: str, service: str) -> Identity:
        """Who a refresh token stands for now; raises :class:`RefreshError`."""
        try:
            verifier = self.signer.verifier(self.issuer, self.audience, TOKEN_TYPE)
            claims = verifier.verify(token)
        except TokenError as error:
            raise RefreshError(str(error)) from None
        if claims.extra.get("service") != service:
            raise RefreshError("refresh token was issued for another service")
        name = claims.extra.get("authn", "users")
        bound = claims.extra.get("credential")
        if not isinstance(name, str) or not isinstance(bound, str):
            raise RefreshError("malformed refresh token")
        standing = await self.authenticators.standing(name, claims.subject)
        if standing is None or not hmac.compare_digest(standing.credential_id, bound):
            raise RefreshError("the user or their password changed since the token was issued")
        return standing.identity
