"""``auth: token``: Docker's delegated token authentication (distribution docs/spec/auth).

Without a valid bearer token a request gets 401 with ``WWW-Authenticate: Bearer realm,
service, scope`` naming exactly the access it needs; the client fetches a token from the
realm and retries. Tokens are verified (signature by an ``x5c`` chain to the
``rootcertbundle``, a thumbprint or libtrust ``kid``, or a JWKS file; issuer, audience,
expiry with 60 s leeway; an algorithm allow-list), and verified tokens are remembered by
their exact bytes until they expire or the certificate chain that signed them does
(``token_cache``), so a token is checked once, not per request.

The ``rootcertbundle`` and ``jwks`` files are looked at once a second and re-read when they
change (a signing-key rotation hands registries a new bundle): tokens are then checked, and
remembered ones checked again, against the new keys. A file that cannot be read or holds
nothing usable leaves the keys in force, with a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from aiohttp import web
from cryptography.exceptions import UnsupportedAlgorithm

from registry.auth.base import Challenge, Grant
from registry.auth.token_cache import DEFAULT_CAPACITY, VerifiedToken, VerifiedTokens, token_key
from registry.config import TokenAuthConfig
from registry.keys import CONFIG
from registry.urls import base_url
from shared import errors
from shared.authorization import BearerToken, MalformedAuthorization, parse_authorization
from shared.jose_keys import DEFAULT_ALGORITHMS
from shared.keyfiles import KeyFileError, read_certificates, read_jwks
from shared.scope import Scope, format_scopes
from shared.token import Claims, TokenVerifier
from shared.token_errors import TokenError

MAX_CACHED_TOKENS = DEFAULT_CAPACITY
RELOAD_CHECK_SECONDS = 1.0  # how often the key files are looked at

log = logging.getLogger(__name__)


class TrustedKeys:
    """The verifier of the keys in ``rootcertbundle`` and ``jwks``, made again when one of
    the files changes."""

    def __init__(self, config: TokenAuthConfig) -> None:
        self.config = config
        self.paths = [path for path in (config.rootcertbundle, config.jwks) if path]
        self._stamp = self._stamps()
        self.verifier = self._load()  # raises ValueError naming the key: start-up stops
        self._checked = time.monotonic()

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                info = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> TokenVerifier:
        config = self.config
        try:
            certificates = read_certificates(config.rootcertbundle) if config.rootcertbundle else []
        except KeyFileError as error:
            raise ValueError(f"auth.token.rootcertbundle: {error}") from None
        try:
            jwks = read_jwks(config.jwks) if config.jwks else None
        except KeyFileError as error:
            raise ValueError(f"auth.token.jwks: {error}") from None
        return TokenVerifier(
            issuer=config.issuer,
            audience=config.service,
            trusted_certs=certificates,
            jwks=jwks,
            algorithms=tuple(config.signingalgorithms) or DEFAULT_ALGORITHMS,
        )

    def refresh(self, now: float) -> bool:
        """Re-read the files if they changed (looked at once a second); whether the keys
        in force changed."""
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return False
        self._checked = now
        stamp = self._stamps()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.verifier = self._load()
        except (ValueError, TypeError, TokenError, UnsupportedAlgorithm) as error:
            # Half-copied, or keys this verifier refuses: never a 500, never no keys.
            log.warning("keeping the token keys in force: %s", error)
            return False
        log.info("auth.token: re-read the trusted keys (%s)", ", ".join(self.paths))
        return True


class TokenAccessController:
    def __init__(self, config: TokenAuthConfig, *, cache_size: int = MAX_CACHED_TOKENS) -> None:
        for key in ("realm", "service", "issuer"):
            if not getattr(config, key) and not (key == "realm" and config.autoredirect):
                raise ValueError(f"auth.token.{key} is required")
        if not config.rootcertbundle and not config.jwks:
            raise ValueError("auth.token needs rootcertbundle or jwks to trust any key")
        self.config = config
        self.keys = TrustedKeys(config)
        self.verified = VerifiedTokens(cache_size)

    def _realm(self, request: web.Request) -> str:
        if self.config.autoredirect:
            base = base_url(request, request.app[CONFIG]) or ""
            return base + self.config.autoredirectpath
        return self.config.realm

    def _challenge(
        self,
        request: web.Request,
        needed: Sequence[Scope],
        error: str | None = None,
        message: str | None = None,
    ) -> Challenge:
        parts = [f'realm="{self._realm(request)}"', f'service="{self.config.service}"']
        if needed:
            parts.append(f'scope="{format_scopes(needed)}"')
        if error is not None:
            parts.append(f'error="{error}"')
        code = errors.DENIED if error == "insufficient_scope" else errors.UNAUTHORIZED
        return Challenge("Bearer " + ",".join(parts), code, message)

    async def authorize(self, request: web.Request, needed: Sequence[Scope]) -> Grant:
        header = request.headers.get("Authorization")
        if header is None:
            raise self._challenge(request, needed)
        # A client sends the same header on every request: the remembered grant of that
        # exact value (checked against the clock) spares parsing and verifying it again.
        if self.keys.refresh(time.monotonic()):
            self.verified.clear()  # a key taken out of the bundle must stop working now
        key = token_key(header)
        grant = self.verified.get(key, time.time())
        if grant is not None:
            return grant
        try:
            credentials = parse_authorization(header)
        except MalformedAuthorization as error:
            if error.scheme != "bearer":
                raise self._challenge(request, needed) from None
            raise self._challenge(request, needed, "invalid_token", str(error)) from None
        if not isinstance(credentials, BearerToken):
            raise self._challenge(request, needed)
        verifier = self.keys.verifier
        try:
            # Raises on anything wrong, expiry included: nothing failed is remembered.
            checked = verifier.check(credentials.token)
        except TokenError as error:
            raise self._challenge(request, needed, "invalid_token", str(error)) from None
        verified = VerifiedToken.of(checked, verifier.leeway.total_seconds())
        self.verified.put(key, verified)
        return verified.grant

    def insufficient(self, request: web.Request, needed: Sequence[Scope]) -> Challenge:
        return self._challenge(request, needed, "insufficient_scope")

    def verify(self, token: str) -> Claims:
        """The claims of a token this registry accepts, verified in full against the keys in
        force (re-read when their files change); raises TokenError otherwise. For the web
        interface, which gets a new token per page; requests go through :meth:`authorize`."""
        if self.keys.refresh(time.monotonic()):
            self.verified.clear()
        return self.keys.verifier.verify(token)

    async def start(self) -> None:
        """Nothing to prepare: the keys were read when the controller was built."""

    async def close(self) -> None:
        self.verified.clear()
