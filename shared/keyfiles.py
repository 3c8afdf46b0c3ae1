"""Reading certificate bundles and JWKS documents from files, with errors meant for the
operator: each names the file and says what is wrong with it in words (never
cryptography's "MalformedFraming" or json's "Expecting value: line 1 column 1"), so that
the caller only has to prefix the configuration key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography import x509

from shared.jose_keys import PublicKey, keys_from_jwks, load_certificates

# A JWKS file holds a handful of public keys; anything larger is not one.
MAX_JWKS_BYTES = 1024 * 1024


class KeyFileError(ValueError):
    """The file cannot be read or holds nothing usable; the message names it."""


def _read(path: str, limit: int | None = None) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read() if limit is None else file.read(limit + 1)
    except OSError as error:
        raise KeyFileError(f"cannot read {path}: {error.strerror or error}") from None
    if limit is not None and len(data) > limit:
        raise KeyFileError(f"{path} is larger than {limit} bytes")
    return data


def read_certificates(path: str | Path) -> list[x509.Certificate]:
    """The PEM certificates in ``path``, in file order (leaf first in a bundle)."""
    data = _read(str(path))
    try:
        return load_certificates(data)
    except ValueError:
        if not data.strip():
            raise KeyFileError(f"{path} is empty: expected PEM certificates") from None
        raise KeyFileError(f"{path} holds no PEM certificate") from None


def read_jwks(path: str | Path) -> dict[str, Any]:
    """The JWKS document in ``path``, checked to hold usable public keys."""
    data = _read(str(path), MAX_JWKS_BYTES)
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = (
            f" (line {error.lineno}, column {error.colno})"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        raise KeyFileError(f"{path} is not a JSON document{where}") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"{path} is not a JWKS document: expected a JSON object")
    try:
        keys: dict[str, PublicKey] = keys_from_jwks(document)
    except ValueError as error:
        raise KeyFileError(f"{path}: {error}") from None
    if not keys:
        raise KeyFileError(f"{path} holds no key")
    return document
