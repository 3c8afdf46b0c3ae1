"""The memory of bearer tokens this registry has verified, so a client that sends the same
token on every request pays for its signature once.

An entry is keyed by the SHA-256 of the exact ``Authorization`` value that was verified
(never by anything parsed out of it: a token that differs in one byte, a forged signature
over the same claims included, is a different key and is verified in full). It holds what
a request needs from the token: the :class:`Grant` built from its ``access`` claim and the
times it is valid between. Only successful verifications are stored. Validity is checked
against the clock on every use, with the same leeway as the verifier, so a token stops
working at the same second whether or not it was remembered: at its ``exp`` (plus the
leeway), or when the certificate chain that vouched for its signing key expires, the
trusted root included (no leeway, as full verification refuses the chain from then on),
whichever comes first. The memory is a bounded LRU:
clients choose the token bytes, so many distinct tokens push out the oldest, never grow it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from registry.auth.base import Grant
from shared.token import VerifiedClaims

DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token allows, and the (leeway-widened) Unix times it is valid in."""

    grant: Grant
    valid_from: float  # nbf (or iat) less the leeway
    valid_until: float  # exp plus the leeway, or the chain's expiry if that is sooner

    @classmethod
    def of(cls, verified: VerifiedClaims, leeway: float) -> VerifiedToken:
        claims = verified.claims
        grant = Grant(claims.subject, claims.access)
        until = claims.expires_at + leeway
        if verified.key_valid_until is not None:
            # No leeway: full verification refuses the chain once past its not_valid_after.
            until = min(until, verified.key_valid_until)
        return cls(grant, claims.not_before - leeway, until)


def token_key(authorization: str) -> bytes:
    """The cache key of an ``Authorization`` value: a fixed 32 bytes whatever its size.

    ``surrogatepass`` because aiohttp hands non-UTF-8 header bytes over as surrogates: it
    encodes any of them (one-to-one), where a strict encode would raise.
    """
    return hashlib.sha256(authorization.encode("utf-8", "surrogatepass")).digest()


class VerifiedTokens:
    """A bounded LRU of :class:`VerifiedToken` by :func:`token_key`."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("the token cache needs room for at least one token")
        self.capacity = capacity
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Grant | None:
        """The grant of a remembered token valid at ``now``; a token past its time is
        forgotten and None returned, so the caller verifies it again (and refuses it)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.valid_from <= now < entry.valid_until:
            self._entries.move_to_end(key)
            return entry.grant
        del self._entries[key]
        return None

    def put(self, key: bytes, entry: VerifiedToken) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
