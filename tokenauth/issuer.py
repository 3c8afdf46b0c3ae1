"""The token decision, independent of HTTP: check the login, authorize, sign the token.

Handlers parse a request into calls on :class:`TokenIssuer` and render what it returns;
every refusal is raised as a :class:`TokenAuthError` carrying its status and headers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from shared.credentials import VerifierBusy
from shared.errors import TOOMANYREQUESTS, UNAUTHORIZED, UNAVAILABLE
from shared.ratelimit import Buckets, LoginLimits, Throttled
from shared.scope import Scope
from shared.token import Claims
from tokenauth import audit
from tokenauth.authn.base import AuthenticatorUnavailable, Identity
from tokenauth.authn.chain import AuthenticatorChain
from tokenauth.authz import AuthorizerChain, AuthorizerUnavailable
from tokenauth.config import TokenAuthConfig
from tokenauth.errors import INVALID_REQUEST, TokenAuthError
from tokenauth.refresh import RefreshError, RefreshTokens
from tokenauth.signing import SigningKeys

MAX_ACCOUNT_LENGTH = 255


@dataclass(frozen=True)
class Issued:
    """A signed access token and what it grants."""

    token: str
    claims: Claims
    lifetime: timedelta

    @property
    def issued_at(self) -> str:
        """``iat`` in RFC 3339, as the token response's ``issued_at``."""
        return rfc3339(self.claims.issued_at)


_last_second: tuple[int, str] = (-1, "")


def rfc3339(seconds: int) -> str:
    """``2026-11-29T04:55:07Z`` for Unix ``seconds``. A busy server issues many tokens in
    the same second: the text is made once a second (datetime's isoformat with its UTC
    offset was a twentieth of a token's time)."""
    global _last_second
    last, text = _last_second
    if seconds != last:
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
        _last_second = (seconds, text)
    return text


class TokenIssuer:
    """Authenticates (the chain), authorizes (the chain) and signs for one configuration.

    Each step writes what it decided into the request's audit record (``audit.current()``).
    """

    def __init__(
        self,
        config: TokenAuthConfig,
        signer: SigningKeys,
        authenticators: AuthenticatorChain,
        authorizers: AuthorizerChain,
        buckets: Buckets | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.authenticators = authenticators
        self.authorizers = authorizers
        self.realm = config.http.realm
        self.limits = LoginLimits(config.ratelimit, buckets)  # None: in this process
        self.refresh_tokens = RefreshTokens(
            signer,
            issuer=config.token.issuer,
            lifetime=config.token.refreshlifetime,
            authenticators=authenticators,
        )

    def check_service(self, service: str | None) -> str:
        audit.current().service = service
        if not service:
            message = "the 'service' parameter is required"
            raise TokenAuthError(INVALID_REQUEST, message, oauth="invalid_request")
        if service not in self.config.token.services:
            raise TokenAuthError(INVALID_REQUEST, "unknown service", oauth="invalid_request")
        return service

    async def login(self, user: str, password: str, ip: str | None) -> Identity:
        """Check a user's password (rate-limited) with the authenticator chain."""
        audit.current().account = user
        if not user or len(user) > MAX_ACCOUNT_LENGTH:
            raise TokenAuthError(INVALID_REQUEST, "invalid user name", oauth="invalid_request")
        try:
            identity = await self.authenticators.login(
                user, password, self.limits.admission(user, ip)
            )
        except Throttled as error:
            raise _throttled(error) from None
        except VerifierBusy:
            raise TokenAuthError(
                UNAVAILABLE,
                "too many logins being checked; try again shortly",
                oauth="temporarily_unavailable",
                headers={"Retry-After": "1"},
            ) from None
        except AuthenticatorUnavailable as error:
            raise _unavailable(error) from None
        if identity is None:
            raise self.unauthorized("invalid username or password")
        audit.current().account = identity.account
        return identity

    async def redeem(self, refresh_token: str, service: str, ip: str | None) -> Identity:
        """Who a refresh token stands for now (failures count against the client)."""
        try:
            attempt = await self.limits.attempt(None, ip)
        except Throttled as error:
            raise _throttled(error) from None
        try:
            identity = await self.refresh_tokens.redeem(refresh_token, service)
        except RefreshError as error:
            raise self.unauthorized(f"invalid refresh token: {error}") from None
        except AuthenticatorUnavailable as error:
            await attempt.give_back()  # the store is down, not the client wrong
            raise _unavailable(error) from None
        await attempt.give_back()
        audit.current().account = identity.account
        audit.current().authenticator = identity.authenticator
        return identity

    async def refresh_token(self, identity: Identity, service: str) -> str | None:
        """A refresh token for ``identity``, if its authenticator offers them."""
        try:
            return await self.refresh_tokens.issue(identity, service)
        except AuthenticatorUnavailable:
            return None  # the access token is still good; the client logs in again later

    def unauthorized(self, message: str) -> TokenAuthError:
        challenge = f'Basic realm="{self.realm}", charset="UTF-8"'
        return TokenAuthError(
            UNAUTHORIZED, message, oauth="invalid_grant", headers={"WWW-Authenticate": challenge}
        )

    async def authorize(
        self, identity: Identity, service: str, ip: str | None, scopes: list[Scope]
    ) -> list[Scope]:
        """Requested ∩ allowed, scope by scope; scopes granted nothing are left out."""
        try:
            return await self.authorizers.authorize(identity, service, ip, scopes)
        except AuthorizerUnavailable as error:
            raise _unavailable(error) from None

    def issue(self, identity: Identity, service: str, granted: list[Scope]) -> Issued:
        lifetime = self.config.token.lifetime
        claims = Claims.issue(
            issuer=self.config.token.issuer,
            subject=identity.account,
            audience=service,
            lifetime=lifetime,
            access=granted,
        )
        audit.current().jti = claims.jwt_id
        return Issued(self.signer.sign(claims), claims, lifetime)


def _throttled(error: Throttled) -> TokenAuthError:
    return TokenAuthError(
        TOOMANYREQUESTS,
        "too many failed logins; try again later",
        oauth="invalid_grant",
        headers={"Retry-After": str(error.retry_after)},
    )


def _unavailable(error: Exception) -> TokenAuthError:
    # The reason (which store, and why) is for the audit line and the client alike; it
    # never holds a password. Never "wrong password": the client may retry as it is.
    return TokenAuthError(
        UNAVAILABLE,
        str(error) or "a user or rights store cannot be reached",
        oauth="temporarily_unavailable",
        headers={"Retry-After": "5"},
    )
