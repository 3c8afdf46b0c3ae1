"""The token decision, independent of HTTP: check the login, apply the ACL, sign the token.

Handlers parse a request into calls on :class:`TokenIssuer` and render what it returns;
every refusal is raised as a :class:`TokenAuthError` carrying its status and headers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from shared.credentials import VerifierBusy
from shared.errors import TOOMANYREQUESTS, UNAUTHORIZED, UNAVAILABLE
from shared.ratelimit import Buckets, LoginLimits, Throttled
from shared.scope import Scope
from shared.token import Claims
from tokenauth.acl import AclFile
from tokenauth.audit import AuditRecord
from tokenauth.authn.base import Authenticator
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
        return self.claims.issued_datetime.isoformat().replace("+00:00", "Z")


class TokenIssuer:
    """Authenticates, authorizes and signs for one configuration."""

    def __init__(
        self,
        config: TokenAuthConfig,
        signer: SigningKeys,
        authenticator: Authenticator,
        acl: AclFile | None,
        buckets: Buckets | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.authenticator = authenticator
        self.acl = acl
        self.realm = config.http.realm
        self.limits = LoginLimits(config.ratelimit, buckets)  # None: in this process
        self.refresh_tokens = RefreshTokens(
            signer,
            issuer=config.token.issuer,
            lifetime=config.token.refreshlifetime,
            authenticator=authenticator,
        )

    def check_service(self, service: str | None, record: AuditRecord) -> str:
        record.service = service
        if not service:
            message = "the 'service' parameter is required"
            raise TokenAuthError(INVALID_REQUEST, message, oauth="invalid_request")
        if service not in self.config.token.services:
            raise TokenAuthError(INVALID_REQUEST, "unknown service", oauth="invalid_request")
        return service

    async def login(self, user: str, password: str, record: AuditRecord) -> str:
        """Check a user's password (rate-limited); the account name on success."""
        record.account = user
        if not user or len(user) > MAX_ACCOUNT_LENGTH:
            raise TokenAuthError(INVALID_REQUEST, "invalid user name", oauth="invalid_request")
        try:
            ok = await self.authenticator.authenticate(
                user, password, self.limits.admission(user, record.ip)
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
        if not ok:
            raise self.unauthorized("invalid username or password")
        return user

    async def redeem(self, refresh_token: str, service: str, record: AuditRecord) -> str:
        """The account a refresh token stands for (failures count against the client)."""
        try:
            attempt = await self.limits.attempt(None, record.ip)
        except Throttled as error:
            raise _throttled(error) from None
        try:
            user = self.refresh_tokens.redeem(refresh_token, service)
        except RefreshError as error:
            raise self.unauthorized(f"invalid refresh token: {error}") from None
        await attempt.give_back()
        record.account = user
        return user

    def unauthorized(self, message: str) -> TokenAuthError:
        challenge = f'Basic realm="{self.realm}", charset="UTF-8"'
        return TokenAuthError(
            UNAUTHORIZED, message, oauth="invalid_grant", headers={"WWW-Authenticate": challenge}
        )

    def authorize(
        self, account: str, service: str, scopes: list[Scope], record: AuditRecord
    ) -> list[Scope]:
        """Requested ∩ allowed, scope by scope; scopes granted nothing are left out."""
        record.requested = scopes
        acl = self.acl.current() if self.acl is not None else None
        ip = _address(record.ip)
        granted = []
        for scope in scopes:
            if acl is None:
                record.rules.append(None)
                continue
            decision = acl.decide(account, service, ip, scope)
            record.rules.append(decision.rule.number if decision.rule else None)
            if decision.granted.actions:
                granted.append(decision.granted)
        record.granted = granted
        return granted

    def issue(
        self, account: str, service: str, granted: list[Scope], record: AuditRecord
    ) -> Issued:
        lifetime = self.config.token.lifetime
        claims = Claims.issue(
            issuer=self.config.token.issuer,
            subject=account,
            audience=service,
            lifetime=lifetime,
            access=granted,
        )
        record.jti = claims.jwt_id
        return Issued(self.signer.sign(claims), claims, lifetime)


def _throttled(error: Throttled) -> TokenAuthError:
    return TokenAuthError(
        TOOMANYREQUESTS,
        "too many failed logins; try again later",
        oauth="invalid_grant",
        headers={"Retry-After": str(error.retry_after)},
    )


def _address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
