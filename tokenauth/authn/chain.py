"""The authenticator chain: the configured user stores, asked in order.

The first one that knows the user decides (yes with an identity, or no); one that does not
know the user says "not mine" and the next is asked. When none knows the user the login
is refused like a wrong password: a place in the failure buckets, and the htpasswd
files' dummy check and padding when they are configured; another member's "no" is padded
to the same time, so timing does not tell whether the user exists anywhere (without
htpasswd files in the chain there is nothing to pad to, and a directory's "no" takes a
bind longer than its "not mine"). The deciding authenticator is written into the
request's audit record here, where the decision is made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from shared.ratelimit import Admission
from tokenauth import audit
from tokenauth.authn.base import DENIED, Authenticator, Identity, Standing
from tokenauth.authn.htpasswd import HtpasswdUsers


class AuthenticatorChain:
    """Authenticators by name, in the order they are asked."""

    def __init__(self, members: Sequence[Authenticator]) -> None:
        self.members = tuple(members)
        self.by_name = {member.name: member for member in self.members}

    async def login(self, user: str, password: str, admission: Admission) -> Identity | None:
        """The identity ``password`` proves, or None (wrong password, unknown user)."""
        started = time.monotonic()
        await admission.check()
        record = audit.current()
        for member in self.members:
            result = await member.authenticate(user, password, admission)
            if isinstance(result, Identity):
                record.authenticator = member.name
                return result
            if result is DENIED:
                record.authenticator = member.name
                if not isinstance(member, HtpasswdUsers):  # its own refusals are padded
                    await self._pad(started)
                return None
        await self._refuse_unknown(user, password, admission)
        return None

    async def _pad(self, started: float) -> None:
        for member in self.members:
            if isinstance(member, HtpasswdUsers):
                await member.pad(started)
                return

    async def _refuse_unknown(self, user: str, password: str, admission: Admission) -> None:
        for member in self.members:
            if isinstance(member, HtpasswdUsers):
                await member.refuse_unknown(user, password, admission)
                return
        await admission.take()  # a failed login all the same; nothing to give back

    async def standing(self, authenticator: str, account: str) -> Standing | None:
        """``account`` as ``authenticator`` (by name) knows it now; None if gone."""
        member = self.by_name.get(authenticator)
        return None if member is None else await member.standing(account)

    def health(self) -> dict[str, list[dict[str, Any]]]:
        return {member.name: member.health() for member in self.members}

    async def calibrate(self) -> None:
        await asyncio.gather(*(member.calibrate() for member in self.members))

    def close(self) -> None:
        for member in self.members:
            member.close()
