"""The signing-key directory (``token.keydir``): its layout, and the writes that
``tokenauth keygen --dir`` makes to create it and to rotate its keys.

One generation of keys is three slots::

    previous.crt            the key that signed until the last rotation (public part only)
    current.key current.crt the key tokens are signed with now
    next.key    next.crt    the key that signs after the next rotation

plus two files for registries, rewritten at every change: ``bundle.crt`` (the three
certificates, for ``auth.token.rootcertbundle``) and ``jwks.json`` (the three public keys,
for ``auth.token.jwks``). A registry that trusts a generation's bundle accepts every token
signed until the *following* rotation: the current key, the next one it is rotated to,
and the previous one whose tokens are still in flight.

A rotation moves current to previous and next to current, and writes a new next. The
files are written beside their targets and renamed into place one by one, so a reader
sees each file whole; between two renames it may see a key that does not match its
certificate, which :mod:`tokenauth.signing` refuses (keeping the keys it has) and reads
again once the files change.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from shared.jose_keys import PrivateKey, algorithm_for_key, load_private_key, public_jwk
from shared.keyfiles import KeyFileError, read_certificates
from tokenauth.keygen import (
    DEFAULT_RSA_BITS,
    certificate_pem,
    generate_key,
    key_pem,
    self_signed_certificate,
)

PREVIOUS_CERT = "previous.crt"
CURRENT_KEY, CURRENT_CERT = "current.key", "current.crt"
NEXT_KEY, NEXT_CERT = "next.key", "next.crt"
BUNDLE = "bundle.crt"
JWKS = "jwks.json"
# The files whose change means new keys (the registry files follow from them).
WATCHED = (PREVIOUS_CERT, CURRENT_KEY, CURRENT_CERT, NEXT_KEY, NEXT_CERT)


@dataclass(frozen=True)
class KeyOptions:
    """How new keys are made: algorithm (None: the current key's), certificate name and
    lifetime."""

    algorithm: str | None = None
    common_name: str = "portside tokenauth"
    lifetime: timedelta = timedelta(days=3650)
    rsa_bits: int = DEFAULT_RSA_BITS


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` beside ``path`` and rename it over ``path``: readers see it whole."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _new_pair(options: KeyOptions, algorithm: str) -> tuple[PrivateKey, x509.Certificate]:
    key = generate_key(algorithm, options.rsa_bits)
    return key, self_signed_certificate(key, options.common_name, options.lifetime)


def _registry_files(directory: Path, certificates: list[x509.Certificate]) -> None:
    """``bundle.crt`` and ``jwks.json`` for the registries: every published key."""
    _write(directory / BUNDLE, b"".join(certificate_pem(cert) for cert in certificates))
    keys = [public_jwk(cert.public_key(), [cert]) for cert in certificates]  # type: ignore[arg-type]
    _write(directory / JWKS, json.dumps({"keys": keys}, indent=2).encode() + b"\n")


def initialise(directory: Path, options: KeyOptions, *, force: bool = False) -> None:
    """Create ``directory`` with a current and a next key (no previous yet)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not force and any((directory / name).exists() for name in WATCHED):
        raise FileExistsError(f"{directory} already holds keys; rotate them with --rotate")
    algorithm = options.algorithm or "ES256"
    current, current_cert = _new_pair(options, algorithm)
    following, next_cert = _new_pair(options, algorithm)
    (directory / PREVIOUS_CERT).unlink(missing_ok=True)
    _write(directory / NEXT_KEY, key_pem(following), 0o600)
    _write(directory / NEXT_CERT, certificate_pem(next_cert))
    _write(directory / CURRENT_KEY, key_pem(current), 0o600)
    _write(directory / CURRENT_CERT, certificate_pem(current_cert))
    _registry_files(directory, [current_cert, next_cert])


def _certificate(path: Path) -> x509.Certificate:
    try:
        return read_certificates(path)[0]
    except KeyFileError as error:
        raise ValueError(str(error)) from None


def rotate(directory: Path, options: KeyOptions) -> None:
    """previous ← current, current ← next, next ← a new key; then the registry files.

    The order of the renames keeps a signing key at every moment: the old current key
    stays in place until the new one replaces it, and a reader that looks between two
    renames sees a key that does not match its certificate and keeps what it has.
    """
    for name in (CURRENT_KEY, CURRENT_CERT, NEXT_KEY, NEXT_CERT):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory / name} is missing: create keys with keygen --dir")
    current_cert = _certificate(directory / CURRENT_CERT)
    next_key_pem = (directory / NEXT_KEY).read_bytes()
    next_key = load_private_key(next_key_pem)
    next_cert = _certificate(directory / NEXT_CERT)
    if next_cert.public_key() != next_key.public_key():
        raise ValueError(f"{directory / NEXT_CERT} is not the certificate of {NEXT_KEY}")
    following, following_cert = _new_pair(options, options.algorithm or algorithm_for_key(next_key))
    _write(directory / PREVIOUS_CERT, certificate_pem(current_cert))
    _write(directory / CURRENT_KEY, next_key_pem, 0o600)
    _write(directory / CURRENT_CERT, certificate_pem(next_cert))
    _write(directory / NEXT_KEY, key_pem(following), 0o600)
    _write(directory / NEXT_CERT, certificate_pem(following_cert))
    _registry_files(directory, [next_cert, following_cert, current_cert])
