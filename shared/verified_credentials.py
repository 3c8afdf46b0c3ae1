"""A short-lived memory of recently verified credentials that never holds a password.

bcrypt is slow on purpose; a ``docker push`` asks for a token per layer, so each verified
(user, password) is remembered for a few seconds as HMAC-SHA256 under a key drawn at
process start and never written anywhere. A hit needs the same user *and* password; the
whole memory is dropped when the users files change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Hashable
from datetime import timedelta


class VerifiedCredentials:
    """Recently verified credentials: one HMAC per user, with an expiry time."""

    def __init__(
        self,
        ttl: timedelta,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl.total_seconds()
        self.max_entries = max_entries
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[str, tuple[bytes, float]] = {}
        self.version: Hashable = None

    def mac(self, user: str, password: str) -> bytes:
        """The keyed digest standing for (user, password); length-prefixed, so unambiguous."""
        u, p = user.encode(), password.encode()
        message = len(u).to_bytes(4, "big") + u + p
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def sync(self, version: Hashable) -> None:
        """Forget everything if the users files are no longer those the entries came from."""
        if version != self.version:
            self._entries.clear()
            self.version = version

    def __contains__(self, item: tuple[str, bytes]) -> bool:
        user, mac = item
        entry = self._entries.get(user)
        if entry is None:
            return False
        if entry[1] <= self.clock():
            del self._entries[user]
            return False
        return hmac.compare_digest(entry[0], mac)

    def add(self, user: str, mac: bytes, version: Hashable) -> None:
        """Remember a verification made against the users files of ``version``."""
        if self.ttl <= 0 or version != self.version:
            return  # the files changed while bcrypt ran: the result may be stale
        self._entries.pop(user, None)
        while len(self._entries) >= self.max_entries:  # oldest first: dicts keep insertion order
            del self._entries[next(iter(self._entries))]
        self._entries[user] = (mac, self.clock() + self.ttl)

    def __len__(self) -> int:
        return len(self._entries)
