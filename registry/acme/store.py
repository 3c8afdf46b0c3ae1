"""The ``cachefile``: the ACME account key and the current certificate, kept across restarts.

One JSON document, written atomically with mode 0600 (it holds private keys).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def new_private_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class CachedState:
    account_key: bytes  # PEM
    account_uri: str = ""
    key: bytes = b""  # the certificate's private key, PEM
    chain: bytes = b""  # leaf then intermediates, PEM

    def leaf(self) -> x509.Certificate | None:
        if not self.chain:
            return None
        return x509.load_pem_x509_certificates(self.chain)[0]

    def names(self) -> set[str]:
        leaf = self.leaf()
        if leaf is None:
            return set()
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return set()
        return set(san.value.get_values_for_type(x509.DNSName))

    def expires(self) -> datetime | None:
        leaf = self.leaf()
        return leaf.not_valid_after_utc if leaf else None


class CacheFileError(Exception):
    """The cache file cannot be read or written; the message names it."""


def load(path: Path) -> CachedState:
    """The state in ``path``; a new account key when the file does not exist yet."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return CachedState(account_key=new_private_key_pem())
    except (OSError, ValueError) as error:
        raise CacheFileError(f"cannot read letsencrypt cachefile {path}: {error}") from None
    try:
        return CachedState(
            account_key=document["account_key"].encode(),
            account_uri=document.get("account_uri", ""),
            key=document.get("key", "").encode(),
            chain=document.get("chain", "").encode(),
        )
    except (KeyError, AttributeError, TypeError):
        raise CacheFileError(f"letsencrypt cachefile {path} is not portside's format") from None


def save(path: Path, state: CachedState) -> None:
    document = {
        "account_key": state.account_key.decode(),
        "account_uri": state.account_uri,
        "key": state.key.decode(),
        "chain": state.chain.decode(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(document, file)
        os.replace(temporary, path)  # mkstemp made it 0600
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_writable(path: Path) -> None:
    """Refuse at start-up a cachefile that could not be written later."""
    directory = path.parent
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise CacheFileError(f"letsencrypt cachefile {path} is not readable and writable")
    elif not directory.is_dir() or not os.access(directory, os.W_OK):
        raise CacheFileError(f"letsencrypt cachefile {path}: cannot create files in {directory}")
    load(path)
