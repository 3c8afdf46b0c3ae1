"""The htpasswd files (``users``) as a member of the authenticator chain.

The files and their bcrypt checks are ``shared.credentials.HtpasswdAuthenticator``'s (the
registry's ``htpasswd`` access controller uses the same); this adapter says "not mine"
for a user no file names, so that the next authenticator is asked, and refuses an unknown
user after the same dummy check and padding as a wrong password when nobody claims it
(:meth:`refuse_unknown`), so that timing still does not tell whether a user exists.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from shared.credentials import HtpasswdAuthenticator
from shared.ratelimit import Admission
from tokenauth.authn.base import DENIED, NOT_MINE, Identity, Outcome, Standing
from tokenauth.file_changes import FileChanges
from tokenauth.health import users_file_health


class HtpasswdUsers:
    """Users of the ``users`` htpasswd files, searched in order."""

    name = "users"

    def __init__(self, users: HtpasswdAuthenticator) -> None:
        self.users = users
        self.changes = FileChanges([file.path for file in users.files])

    def knows(self, user: str) -> bool:
        """Whether a users file names ``user``, as the files are now: they are looked at
        when they may have changed (``tokenauth.file_changes``)."""
        if self.changes.possibly_changed:
            self.changes.taken()
            self.users.refresh()
        return any(user in users for users in self.users.files)

    async def watching(self) -> AsyncIterator[None]:
        """A ``cleanup_ctx``: watch the users files' directories while the app runs."""
        self.changes.start()
        yield
        self.changes.stop()

    async def authenticate(
        self, user: str, password: str, admission: Admission
    ) -> Identity | Outcome:
        """The chain has checked ``admission`` already (a throttled client gets no further,
        not even with a remembered password). ``knows`` has just re-read changed files, so
        a remembered password is answered here, with one HMAC and one lookup, without
        looking at the files again; anything else goes to the bcrypt check (which looks
        at them once more: it is the slow path anyway)."""
        if not self.knows(user):
            return NOT_MINE
        cache = self.users.cache
        if (user, cache.mac(user, password)) in cache:
            return Identity(user, authenticator=self.name)
        ok = await self.users.authenticate(user, password, admission)
        return Identity(user, authenticator=self.name) if ok else DENIED

    async def refuse_unknown(self, user: str, password: str, admission: Admission) -> None:
        """Spend on an unknown user what a wrong password costs (a dummy bcrypt check at the
        highest cost, a place in the failure buckets, padding): the refusal looks the same."""
        await self.users.authenticate(user, password, admission)

    async def pad(self, started: float) -> None:
        """Wait until a refusal that began at ``started`` (monotonic) has taken as long as
        a bcrypt check at the highest cost present: another authenticator's refusal then
        looks like an unknown user's."""
        await self.users.calibrate()
        elapsed = time.monotonic() - started
        await asyncio.sleep(self.users.timer.padding(self.users.max_cost, elapsed))

    async def standing(self, account: str) -> Standing | None:
        credential = self.credential_id(account)
        if credential is None:
            return None
        return Standing(Identity(account, authenticator=self.name), credential)

    def credential_id(self, account: str) -> str | None:
        """What refresh tokens are bound to: an opaque id of ``account``'s current entry,
        None once no file names it. A digest of the salted bcrypt hash: it changes with the
        password and reveals nothing of it."""
        self.users.refresh()
        users = self.users.file_of(account)
        hashed = users.hash_of(account) if users is not None else None
        if hashed is None:
            return None
        digest = hashlib.sha256(b"portside-credential\0" + hashed).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def health(self) -> list[dict[str, Any]]:
        self.users.refresh()
        return [users_file_health(users) for users in self.users.files]

    async def calibrate(self) -> None:
        await self.users.calibrate()

    def close(self) -> None:
        self.users.close()
