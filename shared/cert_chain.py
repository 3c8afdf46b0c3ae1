"""Certificate chains of registry tokens: an ``x5c`` header checked against trusted roots.

The reference registry 2.8 trusts a token's key when its ``x5c`` chain leads to a
certificate of its ``rootcertbundle``; this is that check, with the rules of Go's
``x509.Verify`` that matter here (CA issuers, validity of every link, the root's included).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization

from shared.token_errors import MalformedToken, UntrustedKey

MAX_CHAIN_LENGTH = 5
_E = TypeVar("_E", bound=x509.ExtensionType)


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


def parse_x5c(x5c: Any) -> list[x509.Certificate]:
    """The certificates of a token header's ``x5c`` (base64 DER, leaf first)."""
    if not isinstance(x5c, list) or not x5c or len(x5c) > MAX_CHAIN_LENGTH:
        raise MalformedToken("x5c must be a non-empty list of certificates")
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
    except (ValueError, TypeError):
        raise MalformedToken("x5c holds an invalid certificate") from None
