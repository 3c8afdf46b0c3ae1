"""What every authenticator implements, and what it answers.

An authenticator answers a login with an :class:`Identity` (yes: the account and its
groups), :data:`DENIED` (no: the user is its own and the password is wrong, or the user
is disabled) or :data:`NOT_MINE` (it does not know the user: the next one in the chain is
asked). A store it cannot reach raises :class:`AuthenticatorUnavailable`, which becomes a
503, never a "wrong password".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from shared.ratelimit import Admission
from shared.scope import Scope

MAX_GROUPS = 256  # groups kept per identity: an ACL rule may try each one


class Outcome(enum.Enum):
    """A login that did not succeed."""

    DENIED = "denied"
    NOT_MINE = "not_mine"


DENIED = Outcome.DENIED
NOT_MINE = Outcome.NOT_MINE


@dataclass(frozen=True)
class Identity:
    """Who logged in: the account (the token's ``sub``), its groups, which authenticator
    said so, and the rights a robot account is limited to (None: no limit but the ACL)."""

    account: str
    groups: tuple[str, ...] = ()
    authenticator: str = ""
    limits: tuple[Scope, ...] | None = None

    @classmethod
    def anonymous(cls) -> Identity:
        return cls("")


@dataclass(frozen=True)
class Standing:
    """An account's identity now, and an opaque id of its credential that changes when the
    credential does (a digest, never the secret): refresh tokens carry and check it."""

    identity: Identity
    credential_id: str


class AuthenticatorUnavailable(Exception):
    """The user store cannot be asked now (directory down, program timed out)."""


class Authenticator(Protocol):
    """One user store of the chain (``tokenauth.authn.chain``)."""

    name: str  # the key it is configured by: users, ldap, extauth, robots

    async def authenticate(
        self, user: str, password: str, admission: Admission
    ) -> Identity | Outcome:
        """Check ``password``; count a failed check in ``admission`` (``Throttled`` when a
        bucket is empty); raise :class:`AuthenticatorUnavailable` when the store is down."""
        ...

    async def standing(self, account: str) -> Standing | None:
        """The account as it is now, for a refresh token: issued only when this is not
        None, and redeemed only while it still is, with the same credential id. None: the
        account is gone, or this authenticator offers no refresh tokens."""
        ...

    def health(self) -> list[dict[str, Any]]:
        """Entries for ``GET /health``: never a secret."""
        ...

    async def calibrate(self) -> None:
        """Prepare before serving (time a check, open connections)."""
        ...

    def close(self) -> None:
        """Release threads and connections (called from a worker thread at shutdown)."""
        ...
