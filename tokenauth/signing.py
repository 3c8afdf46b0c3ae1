"""The signing keys of a configuration: one key file (``token.key``/``token.certificate``)
or a key directory (``token.keydir``, layout in :mod:`tokenauth.keydir`) that is watched
and re-read when a rotation changes it, without a restart.

:class:`SigningKeys` signs with the current key and publishes every key a registry may
meet (previous, current, next) in JWKS; refresh tokens verify against all of them, so a
rotation does not end the refresh tokens signed just before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from shared.config import ConfigError
from shared.jose_keys import PublicKey, algorithm_for_key, load_private_key, public_jwk, thumbprint
from shared.keyfiles import KeyFileError, read_certificates
from shared.token import Claims, TokenSigner, TokenVerifier
from shared.token_errors import BadAlgorithm
from tokenauth import keydir
from tokenauth.config import TokenConfig

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0  # seconds between looks at the key directory


@dataclass(frozen=True)
class Published:
    """A public key tokenauth vouches for, with its certificate chain."""

    key: PublicKey
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class KeySet:
    """One generation: the signer, and every key published (the signer's first)."""

    signer: TokenSigner
    published: tuple[Published, ...]

    @functools.cached_property
    def bare(self) -> TokenSigner:
        """The signer without its chain: a header with ``kid`` only."""
        return TokenSigner(self.signer.key)


def _signer(key_path: Path, chain: Sequence[x509.Certificate]) -> TokenSigner:
    key = load_private_key(key_path.read_bytes())
    return TokenSigner(key, chain)


def _public(path: Path) -> Published | None:
    if not path.exists():
        return None
    chain = read_certificates(path)
    key = chain[0].public_key()
    if not isinstance(key, PublicKey):
        raise ValueError(f"{path}: unsupported key type")
    return Published(key, tuple(chain))


def read_key_file(config: TokenConfig) -> KeySet:
    """``token.key`` and ``token.certificate``; raise :class:`ConfigError` naming the key."""
    try:
        key = load_private_key(Path(config.key).read_bytes())
    except (OSError, ValueError, TypeError, BadAlgorithm) as error:
        raise ConfigError(f"token.key: cannot load the signing key: {error}") from None
    chain: list[x509.Certificate] = []
    if config.certificate:
        try:
            chain = read_certificates(config.certificate)
        except KeyFileError as error:
            raise ConfigError(f"token.certificate: {error}") from None
    else:
        log.warning("token.certificate is not set: tokens carry no x5c, which registry 2.x needs")
    try:
        signer = TokenSigner(key, chain)
    except (ValueError, BadAlgorithm) as error:
        raise ConfigError(f"token.certificate: {error}") from None
    return KeySet(signer, (Published(signer.public_key, signer.chain),))


def read_key_directory(directory: Path) -> KeySet:
    """The keys of a key directory; raises ``ValueError``/``OSError`` naming the file."""
    try:
        current = _signer(
            directory / keydir.CURRENT_KEY, read_certificates(directory / keydir.CURRENT_CERT)
        )
    except (ValueError, TypeError, BadAlgorithm) as error:  # KeyFileError included
        raise ValueError(f"{directory / keydir.CURRENT_KEY}: {error}") from None
    try:
        return _published(directory, current)
    except (TypeError, BadAlgorithm) as error:  # a key cryptography or PyJWT refuses
        raise ValueError(f"{directory}: {error}") from None


def _published(directory: Path, current: TokenSigner) -> KeySet:
    published = [Published(current.public_key, current.chain)]
    following = _public(directory / keydir.NEXT_CERT)
    if following is not None:
        if (directory / keydir.NEXT_KEY).exists():
            next_key = load_private_key((directory / keydir.NEXT_KEY).read_bytes())
            if next_key.public_key() != following.key:
                raise ValueError(f"{directory / keydir.NEXT_CERT} is not for {keydir.NEXT_KEY}")
        published.append(following)
    previous = _public(directory / keydir.PREVIOUS_CERT)
    if previous is not None:
        published.append(previous)
    unique: dict[str, Published] = {}
    for entry in published:  # a key published once, in its first place
        unique.setdefault(thumbprint(entry.key), entry)
    return KeySet(current, tuple(unique.values()))


def _signature(directory: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """What changes when any key file is replaced: inode, size and mtime of each."""
    stats: list[tuple[int, int, int] | None] = []
    for name in keydir.WATCHED:
        try:
            info = os.stat(directory / name)
        except FileNotFoundError:
            stats.append(None)
        else:
            stats.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stats)


class SigningKeys:
    """The keys in force; :meth:`watch` replaces them when the key directory changes."""

    def __init__(self, config: TokenConfig) -> None:
        self.directory = Path(config.keydir) if config.keydir else None
        self.error: str | None = None  # why the directory's latest state was not taken
        self._verifier: tuple[KeySet, tuple[str, str, str], TokenVerifier] | None = None
        if self.directory is None:
            self.keys = read_key_file(config)
            self._seen: tuple[tuple[int, int, int] | None, ...] = ()
            return
        self._seen = _signature(self.directory)
        try:
            self.keys = read_key_directory(self.directory)
        except (OSError, ValueError) as error:
            raise ConfigError(f"token.keydir: {error}") from None

    @property
    def signer(self) -> TokenSigner:
        return self.keys.signer

    def sign(self, claims: Claims, *, typ: str = "JWT", x5c: bool = True) -> str:
        """``claims`` signed with the current key; ``x5c=False``: the header names the key
        by ``kid`` only (tokens only tokenauth reads back)."""
        keys = self.keys
        signer = keys.signer if x5c or not keys.signer.chain else keys.bare
        return signer.sign(claims, typ=typ)

    def verifier(self, issuer: str, audience: str, token_type: str) -> TokenVerifier:
        """A verifier (no leeway) of tokens tokenauth signed for itself with any published
        key; made again when the keys change."""
        keys, wanted = self.keys, (issuer, audience, token_type)
        cached = self._verifier
        if cached is None or cached[0] is not keys or cached[1] != wanted:
            verifier = TokenVerifier(
                issuer=issuer,
                audience=audience,
                jwks=self.jwks(),
                algorithms=sorted({algorithm_for_key(p.key) for p in keys.published}),
                leeway=timedelta(0),
                token_type=token_type,
            )
            cached = self._verifier = (keys, wanted, verifier)
        return cached[2]

    def jwks(self) -> dict[str, Any]:
        """Every published key (current first), each with its ``x5c`` chain."""
        return {"keys": [public_jwk(p.key, p.chain) for p in self.keys.published]}

    def reload_if_changed(self) -> bool:
        """Take the directory's keys if its files changed and they are consistent."""
        if self.directory is None:
            return False
        seen = _signature(self.directory)
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            keys = read_key_directory(self.directory)
        except (OSError, ValueError) as error:
            # Between two renames of a rotation, or a broken edit: keep signing with the
            # keys in force; the next change of the files is read again.
            self.error = str(error)
            log.warning("token.keydir: keeping the keys in force: %s", error)
            return False
        changed = keys.signer.kid != self.keys.signer.kid or keys.published != self.keys.published
        self.keys, self.error = keys, None
        if changed:
            log.info("token.keydir: now signing with key %s", keys.signer.kid)
        return changed

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Look at the key directory every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:  # never stop watching: the next rotation must be taken
                log.exception("token.keydir: could not look at the key directory")


async def watching(keys: SigningKeys) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` that watches the key directory while the app runs."""
    if keys.directory is None:
        yield
        return
    task = asyncio.create_task(keys.watch())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
