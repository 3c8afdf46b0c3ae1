"""Docker registry bearer tokens: claims, signing, verification, key identifiers and JWKS.

A token is a JWS-signed JWT (distribution ``docs/spec/auth/jwt.md``). The issuer puts two key
identifiers in the header so every registry generation finds the key: ``kid`` = the RFC 7638
thumbprint (Distribution v3, JWKS) and ``x5c`` = the certificate chain (the reference registry
2.8 checks it against its ``rootcertbundle``). The verifier additionally knows the legacy
libtrust key id (``ABCD:EFGH:...``) that docker_auth and Harbor put in ``kid``.

Only asymmetric algorithms exist here: ``none`` and HMAC are refused outright, because a
verifier that trusts a public key must never let the token pick a shared-secret algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shared.scope import Scope, ScopeError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_ALGORITHM_LIST = "ES256 ES384 ES512 RS256 RS384 RS512 PS256 PS384 PS512 EdDSA"
DEFAULT_ALGORITHMS = tuple(_ALGORITHM_LIST.split(" "))
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MIN_RSA_BITS = 2048
MAX_TOKEN_LENGTH = 64 * 1024  # a header with a 3-certificate RSA chain is a few KiB
MAX_CHAIN_LENGTH = 5
_E = TypeVar("_E", bound=x509.ExtensionType)


class TokenError(Exception):
    """A token that must not be accepted; subclasses say why."""


class MalformedToken(TokenError):
    """Not a well-formed JWT, or its claims have the wrong shape."""


class BadAlgorithm(TokenError):
    """``none``, HMAC, an algorithm outside the allow-list, or one that does not fit the key."""


class UntrustedKey(TokenError):
    """The signing key is unknown or its certificate chain does not lead to a trusted root."""


class InvalidSignature(TokenError):
    """The signature does not verify with the key the token names."""


class TokenExpired(TokenError):
    """``exp`` is in the past (beyond the leeway)."""


class TokenNotYetValid(TokenError):
    """``nbf`` or ``iat`` is in the future (beyond the leeway)."""


class WrongAudience(TokenError):
    """The token was issued for another service."""


class WrongIssuer(TokenError):
    """The token was issued by someone else."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# json.dumps with a non-default option builds a new encoder on every call: one, kept.
_encode_compact = json.JSONEncoder(separators=(",", ":")).encode


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return _encode_compact(value).encode()


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def _jwk_members(key: PublicKey) -> dict[str, str]:
    """The RFC 7638 required members of a public key's JWK."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        numbers, size = key.public_numbers(), (key.curve.key_size + 7) // 8
        crv = _CURVE_NAMES.get(key.curve.name)
        if crv is None:
            raise ValueError(f"unsupported elliptic curve {key.curve.name}")
        x, y = _b64url(_int_bytes(numbers.x, size)), _b64url(_int_bytes(numbers.y, size))
        return {"crv": crv, "kty": "EC", "x": x, "y": y}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        n, e = _b64url(_int_bytes(rsa_numbers.n)), _b64url(_int_bytes(rsa_numbers.e))
        return {"e": e, "kty": "RSA", "n": n}
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the ``kid`` this project issues."""
    canonical = json.dumps(_jwk_members(key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def libtrust_key_id(key: PublicKey) -> str:
    """docker/libtrust's key id: base32 of SHA-256(SPKI DER)[:30], in groups of four."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def public_jwk(key: PublicKey, chain: Sequence[x509.Certificate] = ()) -> dict[str, Any]:
    """The JWK published in JWKS: key members, ``kid``, ``use``, ``alg`` and optional ``x5c``."""
    jwk: dict[str, Any] = {**_jwk_members(key), "kid": thumbprint(key), "use": "sig"}
    jwk["alg"] = algorithm_for_key(key)
    if chain:
        jwk["x5c"] = [_cert_b64(cert) for cert in chain]
    return jwk


def keys_from_jwks(document: Mapping[str, Any]) -> dict[str, PublicKey]:
    """Public keys of a JWKS document by ``kid`` (the thumbprint when a key has no ``kid``)."""
    keys: dict[str, PublicKey] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS document has no 'keys' list")
    for entry in entries:
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, TypeError, AttributeError) as error:
            raise ValueError(f"invalid JWKS key: {error}") from None
        if not isinstance(key, PublicKey):
            raise ValueError(f"JWKS key of type {entry.get('kty')!r} is not a public signing key")
        keys[str(entry.get("kid") or thumbprint(key))] = key
    return keys


def algorithm_for_key(key: PublicKey | PrivateKey) -> str:
    """The signing algorithm a key implies: ES256/384/512 by curve, RS256, or EdDSA."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        for alg, curve in _CURVES.items():
            if isinstance(key.curve, curve):
                return alg
        raise ValueError(f"unsupported elliptic curve {key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    return "EdDSA"


def _check_algorithm(alg: str, key: PublicKey) -> None:
    """Refuse an algorithm that does not fit the key (algorithm confusion)."""
    if alg in _CURVES:
        ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES[alg])
    elif alg[:2] in ("RS", "PS"):
        ok = isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    else:
        ok = alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey)
    if not ok:
        raise BadAlgorithm(f"algorithm {alg} does not fit the signing key")


def load_private_key(pem: bytes) -> PrivateKey:
    """An unencrypted PEM private key (EC P-256/384/521, RSA >= 2048 bits, or Ed25519)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, PrivateKey):
        raise ValueError("the signing key must be an EC, RSA or Ed25519 private key")
    _check_algorithm(algorithm_for_key(key), key.public_key())
    return key


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in file order (leaf first for a chain)."""
    return x509.load_pem_x509_certificates(pem)


def _cert_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


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
        _check_algorithm(self.algorithm, self.public_key)
        if chain and chain[0].public_key() != self.public_key:
            raise ValueError("the first certificate of the chain is not for the signing key")
        self.chain = tuple(chain)
        self.kid = thumbprint(self.public_key)
        self._signature = jwt.get_algorithm_by_name(self.algorithm)
        # ES*: the key, the scheme, and the length of r and s in the signature.
        self._ecdsa: tuple[ec.EllipticCurvePrivateKey, ec.ECDSA, int] | None = None
        if isinstance(key, ec.EllipticCurvePrivateKey) and self.algorithm in _CURVES:
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
                headers["x5c"] = [_cert_b64(cert) for cert in self.chain]
            segment = self._headers[typ] = _b64url(_compact_json(headers)).encode()
        return segment

    def sign(self, claims: Claims, *, typ: str = "JWT") -> str:
        """The compact JWS of ``claims``; ``typ`` tells token kinds apart (e.g. refresh).

        The header is the same for every token of a kind, so it is encoded once (with its
        ``x5c`` chain: most of a token's bytes); PyJWT's algorithm signs. This halves the
        signing time against ``jwt.encode``, which rebuilds and re-encodes the header.
        """
        payload = _b64url(_compact_json(claims.to_payload())).encode()
        signing_input = self._header(typ) + b"." + payload
        return (signing_input + b"." + _b64url(self._sign(signing_input)).encode()).decode()

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


def verify_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: datetime
) -> datetime:
    """Check that ``chain`` (leaf first) leads to one of ``roots``; raise :class:`UntrustedKey`.

    A leaf that is itself a trusted root is accepted, as Go's ``x509.Verify`` does. Every
    issuer on the path must be a CA and every certificate on it, the trusted root that
    ends it included, must be valid at ``at``. Returns when the path stops being valid:
    the earliest ``not_valid_after`` on it (a verdict remembered past that is wrong).
    """
    root_ders = {root.public_bytes(serialization.Encoding.DER): root for root in roots}
    if not chain or len(chain) > MAX_CHAIN_LENGTH:
        raise UntrustedKey("certificate chain is empty or too long")
    leaf_usage = _extension(chain[0], x509.KeyUsage)
    if leaf_usage is not None and not leaf_usage.digital_signature:
        raise UntrustedKey("signing certificate may not sign (key usage)")
    until = chain[0].not_valid_after_utc
    for index, cert in enumerate(chain):
        if not _valid_at(cert, at):
            raise UntrustedKey(f"certificate {cert.subject.rfc4514_string()} is not valid now")
        until = min(until, cert.not_valid_after_utc)
        if cert.public_bytes(serialization.Encoding.DER) in root_ders:
            return until
        if index + 1 < len(chain):
            if not _issued_by(cert, chain[index + 1]):
                raise UntrustedKey(f"certificate {cert.subject.rfc4514_string()} is not trusted")
            continue
        # Directly issued by a trusted root: one valid now, the longest-lived if several.
        issuers = [root for root in roots if _valid_at(root, at) and _issued_by(cert, root)]
        if not issuers:
            raise UntrustedKey(f"certificate {cert.subject.rfc4514_string()} is not trusted")
        return min(until, max(root.not_valid_after_utc for root in issuers))
    raise AssertionError("unreachable: the loop returns or raises on the chain's last certificate")


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    constraints = _extension(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, _CryptoInvalidSignature):
        return False
    return True


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


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
        _check_algorithm(alg, key)
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
            chain = _parse_x5c(x5c)
            until = verify_chain(chain, self.roots, datetime.now(UTC))
            key = chain[0].public_key()
            if not isinstance(key, PublicKey):
                raise UntrustedKey("unsupported key type in the certificate chain")
            return key, until.timestamp()
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid], None
        raise UntrustedKey("the token's signing key is not trusted")


def _parse_x5c(x5c: Any) -> list[x509.Certificate]:
    if not isinstance(x5c, list) or not x5c or len(x5c) > MAX_CHAIN_LENGTH:
        raise MalformedToken("x5c must be a non-empty list of certificates")
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
    except (ValueError, TypeError):
        raise MalformedToken("x5c holds an invalid certificate") from None
