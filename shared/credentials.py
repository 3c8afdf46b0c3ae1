"""Users from htpasswd files (bcrypt) for the token server and the registry alike, with the
verified-credentials memory in front.

bcrypt runs in a worker thread so the event loop keeps serving; concurrent logins with the
same credentials (a push asks for many tokens at once) share one bcrypt computation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from shared.htpasswd import HtpasswdFile
from shared.verified_credentials import VerifiedCredentials


class HtpasswdAuthenticator:
    """Users of one or more htpasswd files; the first file that has a user decides."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        cache_ttl: timedelta = timedelta(seconds=60),
        cache_entries: int = 10_000,
    ) -> None:
        self.files = [HtpasswdFile(path) for path in paths]
        self.cache = VerifiedCredentials(cache_ttl, cache_entries)
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}  # single flight per credential

    def refresh(self) -> None:
        """Re-read changed files and drop cached verifications if anything changed."""
        for users in self.files:
            users.reload_if_changed()
        self.cache.sync(tuple(users.generation for users in self.files))

    def _file_of(self, user: str) -> HtpasswdFile | None:
        return next((users for users in self.files if user in users), None)

    async def authenticate(self, user: str, password: str) -> bool:
        self.refresh()
        mac = self.cache.mac(user, password)
        if (user, mac) in self.cache:
            return True
        version = self.cache.version
        task = self._inflight.get(mac)
        if task is None:
            # A task of its own: a client hanging up must not cancel the others' answer.
            task = asyncio.ensure_future(asyncio.to_thread(self._verify, user, password))
            self._inflight[mac] = task
            task.add_done_callback(lambda done: self._finished(mac, done))
        ok = await asyncio.shield(task)
        if ok:
            self.cache.add(user, mac, version)
        return ok

    def _finished(self, mac: bytes, task: asyncio.Future[bool]) -> None:
        self._inflight.pop(mac, None)
        if not task.cancelled():
            task.exception()  # mark retrieved; awaiting callers still see it

    def _verify(self, user: str, password: str) -> bool:
        users = self._file_of(user) or (self.files[0] if self.files else None)
        return users is not None and users.verify(user, password)

    def credential_id(self, user: str) -> str | None:
        self.refresh()
        users = self._file_of(user)
        hashed = users.hash_of(user) if users is not None else None
        if hashed is None:
            return None
        # A digest of the salted bcrypt hash: it changes with the password and reveals nothing.
        digest = hashlib.sha256(b"portside-credential\0" + hashed).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
