"""Robot accounts (``tokenauth.robots``) as a member of the authenticator chain.

Logins named ``robot$NAME`` are this authenticator's; any other is "not mine". A robot
unknown, revoked, expired or with a wrong secret is refused (after the same comparison,
against a dummy digest when there is no robot). The identity carries the robot's rights
as limits: the authorizers' grant is cut down to them. Refresh tokens are bound to the
digest of the robot's secret, so revoking (or re-creating) the robot ends them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
from typing import Any

from shared.ratelimit import Admission
from tokenauth.authn.base import DENIED, NOT_MINE, Identity, Outcome, Standing
from tokenauth.health import when
from tokenauth.robots import PREFIX, Robot, RobotsFile, digest

_DUMMY = digest("")  # compared against when the robot does not exist


class RobotAccounts:
    name = "robots"

    def __init__(self, path: str) -> None:
        self.file = RobotsFile(path)

    def _robot(self, account: str) -> Robot | None:
        robot = self.file.current().get(account[len(PREFIX) :])
        now = datetime.datetime.now(datetime.UTC)
        return None if robot is None or robot.expired(now) else robot

    async def authenticate(
        self, user: str, password: str, admission: Admission
    ) -> Identity | Outcome:
        if not user.startswith(PREFIX):
            return NOT_MINE
        attempt = await admission.take()
        robot = self._robot(user)
        expected = robot.secret if robot is not None else _DUMMY
        if not hmac.compare_digest(digest(password), expected) or robot is None:
            return DENIED
        await attempt.give_back()
        return Identity(user, authenticator=self.name, limits=robot.rights)

    async def standing(self, account: str) -> Standing | None:
        robot = self._robot(account) if account.startswith(PREFIX) else None
        if robot is None:
            return None
        bound = hashlib.sha256(b"portside-robot\0" + robot.secret.encode()).digest()[:16]
        credential = base64.urlsafe_b64encode(bound).rstrip(b"=").decode()
        identity = Identity(account, authenticator=self.name, limits=robot.rights)
        return Standing(identity, credential)

    def health(self) -> list[dict[str, Any]]:
        robots = self.file.current()
        return [
            {
                "path": str(self.file.path),
                "state": "stale" if self.file.error else "ok",
                "loaded": True,
                "entries": len(robots),
                "loaded_at": when(self.file.loaded_at),
                "error": self.file.error,
            }
        ]

    async def calibrate(self) -> None:
        return None

    def close(self) -> None:
        return None
