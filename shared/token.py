"""Docker registry bearer tokens: claims, signing and verification.

A token is a JWS-signed JWT (distribution ``docs/spec/auth/jwt.md``). The issuer puts two key
identifiers in the header so every registry generation finds the key: ``kid`` = the RFC 7638
thumbprint (Distribution v3, JWKS) and ``x5c`` = the certificate chain (the reference registry
2.8 checks it against its ``rootcertbundle``, ``shared.cert_chain``). The verifier also knows
the legacy libtrust key id that docker_auth and Harbor put in ``kid`` (``shared.jose_keys``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shared.cert_chain import parse_x5c, verify_chain
from shared.jose_keys import (
    DEFAULT_ALGORITHMS,
    EC_CURVES,
    PrivateKey,
    PublicKey,
    algorithm_for_key,
    b64url,
    cert_b64,
    check_algorithm,
    compact_json,
    keys_from_jwks,
    libtrust_key_id,
    public_jwk,
    thumbprint,
)
from shared.scope import Scope, ScopeError
from shared.token_errors import (
    BadAlgorithm,
    InvalidSignature,
    MalformedToken,
    TokenExpired,
    TokenNotYetValid,
    UntrustedKey,
    WrongAudience,
    WrongIssuer,
)

MAX_TOKEN_LENGTH = 64 * 1024  # a header with a 3-certificate RSA chain is a few KiB


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a registry token; times are integer Unix seconds, as registries expect."""

    issuer: str
    subject: str
    audience: str
    expires_at: int
    not_before: int
    issued_at: int
    jwt_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    access: tuple[Scope, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def issue(
        cls,
        *,
        issuer: str,
        subject: str,
        audience: str,
        lifetime: timedelta,
        access: Sequence[Scope] = (),
        extra: Mapping[str, Any] | None = None,
        now: int | None = None,
    ) -> Claims:
        """Fresh claims valid from ``now`` for ``lifetime``."""
        issued = _now() if now is None else now
        expires = issued + int(lifetime.total_seconds())
        scopes, more = tuple(access), dict(extra or {})
        return cls(issuer, subject, audience, expires, issued, issued, access=scopes, extra=more)

    @property
    def issued_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.issued_at, UTC)

    def allows(self, type_: str, name: str, action: str) -> bool:
        """Whether the ``access`` claim grants ``action`` on ``type_:name``."""
        return any(s.type == type_ and s.name == name and s.allows(action) for s in self.access)

    def to_payload(self) -> dict[str, Any]:
        return {
            **self.extra,
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "exp": self.expires_at,
            "nbf": self.not_before,
            "iat": self.issued_at,
            "jti": self.jwt_id,
            "access": [scope.to_claim() for scope in self.access],
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], audience: str) -> Claims:
        """Claims of a verified payload; ``audience`` is the one the verifier matched."""
        known = {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"}
        access = payload.get("access") or []
        try:
            if not isinstance(access, list):
                raise ScopeError("'access' must be a list")
            scopes = tuple(Scope.from_claim(entry) for entry in access)
            expires = payload["exp"]
            starts = [payload[k] for k in ("nbf", "iat") if k in payload]
            if not all(isinstance(t, int | float) for t in (expires, *starts)):
                raise ScopeError("time claims must be numbers")
        except (ScopeError, AttributeError, KeyError) as error:
            raise MalformedToken(f"malformed claims: {error}") from None
        # not_before: the first second the verifier accepts the token (it refuses an nbf
        # and an iat in the future alike); without either, it has no lower bound.
        return cls(
            str(payload["iss"]),
            str(payload.get("sub", "")),
            audience,
            int(expires),
            int(max(starts, default=0)),
            int(payload.get("iat", expires)),
            str(payload.get("jti", "")),
            scopes,
            {k: v for k, v in payload.items() if k not in known},
        )


class TokenSigner:
    """Signs claims with one private key; the header names the key by thumbprint and chain."""

    def __init__(
        self,
        key: PrivateKey,
        chain: Sequence[x509.Certificate] = (),
        *,
        algorithm: str | None = None,
    ) -> None:
        self.key = key
        self.public_key: PublicKey = key.public_key()
        self.algorithm = algorithm or algorithm_for_key(key)
        if self.algorithm not in DEFAULT_ALGORITHMS:
            raise BadAlgorithm(f"refusing to sign with {self.algorithm}")
        check_algorithm(self.algorithm, self.public_key)
        if chain and chain[0].public_key() != self.public_key:
            raise ValueError("the first certificate of the chain is not for the signing key")
        self.chain = tuple(chain)
        self.kid = thumbprint(self.public_key)
        self._signature = jwt.get_algorithm_by_name(self.algorithm)
        # ES*: the key, the scheme, and the length of r and s in the signature.
        self._ecdsa: tuple[ec.EllipticCurvePrivateKey, ec.ECDSA, int] | None = None
        if isinstance(key, ec.EllipticCurvePrivateKey) and self.algorithm in EC_CURVES:
            digests: dict[str, hashes.HashAlgorithm] = {
                "ES256": hashes.SHA256(),
                "ES384": hashes.SHA384(),
                "ES512": hashes.SHA512(),
            }
            scheme = ec.ECDSA(digests[self.algorithm])
            self._ecdsa = (key, scheme, (key.curve.key_size + 7) // 8)
        self._headers: dict[str, bytes] = {}  # typ -> the encoded header, made once

    def _header(self, typ: str) -> bytes:
        segment = self._headers.get(typ)
        if segment is None:
            headers: dict[str, Any] = {"alg": self.algorithm, "typ": typ, "kid": self.kid}
            if self.chain:
                headers["x5c"] = [cert_b64(cert) for cert in self.chain]
            segment = self._headers[typ] = b64url(compact_json(headers)).encode()
        return segment

    def sign(self, claims: Claims, *, typ: str = "JWT") -> str:
        """The compact JWS of ``claims``; ``typ`` tells token kinds apart (e.g. refresh).

        The header is the same for every token of a kind, so it is encoded once (with its
        ``x5c`` chain: most of a token's bytes); PyJWT's algorithm signs. This halves the
        signing time against ``jwt.encode``, which rebuilds and re-encodes the header.
        """
        payload = b64url(compact_json(claims.to_payload())).encode()
        signing_input = self._header(typ) + b"." + payload
        return (signing_input + b"." + b64url(self._sign(signing_input)).encode()).decode()

    def _sign(self, data: bytes) -> bytes:
        """The JWS signature of ``data``. ES256/384/512 are signed by ``cryptography``
        with a scheme object made once (PyJWT makes the hash and scheme objects again for
        every token), and its DER signature turned into JWS's fixed-length ``r || s``."""
        if self._ecdsa is None:
            return self._signature.sign(data, self.key)
        key, scheme, length = self._ecdsa
        r, s = decode_dss_signature(key.sign(data, scheme))
        return r.to_bytes(length, "big") + s.to_bytes(length, "big")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.public_key, self.chain)]}


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """A verified token's claims, and the Unix time its signing key's certificate chain
    (trusted root included) expires: None for a key trusted by itself, not by a chain."""

    claims: Claims
    key_valid_until: float | None


class TokenVerifier:
    """Verifies tokens for one audience: the registry side of the token protocol.

    Keys come from ``trusted_certs`` (a ``rootcertbundle``: a token's ``x5c`` chain must lead
    to one of them, and a token naming one of their keys by thumbprint or libtrust ``kid``
    is accepted too) and from ``jwks`` (keys by ``kid``).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        trusted_certs: Sequence[x509.Certificate] = (),
        jwks: Mapping[str, Any] | None = None,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway: timedelta = timedelta(seconds=60),
        token_type: str | None = None,
    ) -> None:
        refused = [a for a in algorithms if a not in DEFAULT_ALGORITHMS]
        if refused:
            raise BadAlgorithm(f"algorithms not allowed for verification: {refused}")
        self.issuer, self.audience, self.leeway = issuer, audience, leeway
        self.algorithms = tuple(algorithms)
        self.token_type = token_type
        self.roots = tuple(trusted_certs)
        self.keys: dict[str, PublicKey] = {}
        for cert in self.roots:
            key = cert.public_key()
            if isinstance(key, PublicKey):
                self.keys[thumbprint(key)] = self.keys[libtrust_key_id(key)] = key
        if jwks is not None:
            self.keys.update(keys_from_jwks(jwks))

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; raises a :class:`TokenError` subclass otherwise."""
        return self.check(token).claims

    def check(self, token: str) -> VerifiedClaims:
        """As :meth:`verify`, with the time the signing key's certificates stop vouching
        for the token (for whoever remembers the verdict)."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("token too long")
        if not token.isascii():  # a compact JWS is base64url and dots; this is not one
            raise MalformedToken("not a JWT: non-ASCII characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:  # DecodeError, and InvalidTokenError for a bad kid
            raise MalformedToken(f"not a JWT: {error}") from None
        alg = header.get("alg")
        # The messages name no header value: they are the client's, of any size and type.
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise BadAlgorithm("the token's algorithm is not accepted")
        if self.token_type is not None and header.get("typ") != self.token_type:
            raise MalformedToken(f"token type is not {self.token_type!r}")
        key, key_valid_until = self._signing_key(header)
        check_algorithm(alg, key)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            raise InvalidSignature("token signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenNotYetValid("token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise WrongAudience(f"token is not for {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise WrongIssuer(f"token is not from {self.issuer!r}") from None
        except jwt.PyJWTError as error:
            raise MalformedToken(f"invalid token: {error}") from None
        return VerifiedClaims(Claims.from_payload(payload, self.audience), key_valid_until)

    def _signing_key(self, header: Mapping[str, Any]) -> tuple[PublicKey, float | None]:
        """The key to check the signature with, and until when (Unix time) its
        certificates vouch for it: None for a key trusted by itself (``kid``)."""
        x5c = header.get("x5c")
        if x5c is not None and self.roots:
            chain = parse_x5c(x5c)
            until = verify_chain(chain, self.roots, datetime.now(UTC))
            key = chain[0].public_key()
            if not isinstance(key, PublicKey):
                raise UntrustedKey("unsupported key type in the certificate chain")
            return key, until.timestamp()
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid], None
        raise UntrustedKey("the token's signing key is not trusted")
