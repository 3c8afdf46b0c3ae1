"""JOSE keys for registry tokens: key types, the algorithms they imply, JWK and JWKS.

Two key identifiers exist for one public key: the RFC 7638 thumbprint (the ``kid`` this
project issues, and Distribution v3's) and docker/libtrust's key id (what docker_auth and
Harbor put in ``kid``). Only asymmetric algorithms exist here: a verifier that trusts a
public key must never let a token pick a shared-secret algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from shared.token_errors import BadAlgorithm

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_ALGORITHM_LIST = "ES256 ES384 ES512 RS256 RS384 RS512 PS256 PS384 PS512 EdDSA"
DEFAULT_ALGORITHMS = tuple(_ALGORITHM_LIST.split(" "))
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MIN_RSA_BITS = 2048


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# json.dumps with a non-default option builds a new encoder on every call: one, kept.
_encode_compact = json.JSONEncoder(separators=(",", ":")).encode


def compact_json(value: Mapping[str, Any]) -> bytes:
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
        x, y = b64url(_int_bytes(numbers.x, size)), b64url(_int_bytes(numbers.y, size))
        return {"crv": crv, "kty": "EC", "x": x, "y": y}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        n, e = b64url(_int_bytes(rsa_numbers.n)), b64url(_int_bytes(rsa_numbers.e))
        return {"e": e, "kty": "RSA", "n": n}
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the ``kid`` this project issues."""
    canonical = json.dumps(_jwk_members(key), sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


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
        jwk["x5c"] = [cert_b64(cert) for cert in chain]
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
        for alg, curve in EC_CURVES.items():
            if isinstance(key.curve, curve):
                return alg
        raise ValueError(f"unsupported elliptic curve {key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    return "EdDSA"


def check_algorithm(alg: str, key: PublicKey) -> None:
    """Refuse an algorithm that does not fit the key (algorithm confusion)."""
    if alg in EC_CURVES:
        ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, EC_CURVES[alg])
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
    check_algorithm(algorithm_for_key(key), key.public_key())
    return key


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in file order (leaf first for a chain)."""
    return x509.load_pem_x509_certificates(pem)


def cert_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
