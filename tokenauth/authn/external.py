"""An external program as an authenticator: docker_auth's ``ext_auth`` contract.

The program reads ``USER PASSWORD`` (one space between) on standard input and answers with
its exit code: 0 yes, 1 no (wrong password, disabled), 2 not mine (the next authenticator
is asked); anything else, a crash or a timeout makes the login 503, never a refusal. On
0 it may print ``{"labels": {"group": ["a", "b"]}}``: the ``group`` (or ``groups``) label
becomes the identity's groups for the ACL. Each login runs the program (no credential
cache: it decides what a check costs), and refresh tokens are not offered for its
accounts, since nothing tells when their password changes: they log in again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from shared.ratelimit import Admission
from tokenauth.authn.base import (
    DENIED,
    MAX_GROUPS,
    NOT_MINE,
    AuthenticatorUnavailable,
    Identity,
    Outcome,
    Standing,
)
from tokenauth.config import ExternalConfig
from tokenauth.external import ExternalProgram, ProgramFailed

log = logging.getLogger(__name__)


class ExternalAuthenticator:
    name = "extauth"

    def __init__(self, config: ExternalConfig) -> None:
        self.program = ExternalProgram(config, self.name)
        self.command = config.command
        self.last_error: str | None = None
        # Observer for metrics: (authenticator, seconds, result) per check.
        self.on_check: Callable[[str, float, str], None] | None = None

    async def authenticate(
        self, user: str, password: str, admission: Admission
    ) -> Identity | Outcome:
        if " " in user or "\n" in user or "\n" in password:
            return NOT_MINE  # the line format cannot carry it
        attempt = await admission.take()
        started = time.monotonic()
        try:
            answer = await self.program.ask(f"{user} {password}".encode())
        except ProgramFailed as error:
            await attempt.give_back()  # our failure, not the client's
            self._observe(started, "error", str(error))
            raise AuthenticatorUnavailable(str(error)) from None
        if answer.status == 0:
            try:
                groups = _groups(answer.output)
            except ValueError:
                await attempt.give_back()
                self._observe(started, "error", "extauth: the program printed invalid labels")
                raise AuthenticatorUnavailable("extauth: invalid answer") from None
            await attempt.give_back()
            self._observe(started, "match", None)
            return Identity(user, groups, authenticator=self.name)
        if answer.status == 1:
            self._observe(started, "mismatch", None)
            return DENIED
        if answer.status == 2:
            await attempt.give_back()  # not a guess at one of its users
            self._observe(started, "unknown", None)
            return NOT_MINE
        message = f"extauth: the program exited with status {answer.status}"
        await attempt.give_back()
        self._observe(started, "error", message)
        raise AuthenticatorUnavailable(message)

    def _observe(self, started: float, result: str, error: str | None) -> None:
        if error is not None:
            log.error("%s", error)
        self.last_error = error
        if self.on_check is not None:
            self.on_check(self.name, time.monotonic() - started, result)

    async def standing(self, account: str) -> Standing | None:
        return None  # no refresh tokens: the program cannot say the password is unchanged

    def health(self) -> list[dict[str, Any]]:
        return [
            {
                "command": self.command,
                "state": "ok",  # asked on each login: a failure is that login's 503
                "last_error": self.last_error,
            }
        ]

    async def calibrate(self) -> None:
        return None

    def close(self) -> None:
        return None


def _groups(output: bytes) -> tuple[str, ...]:
    """The ``group``/``groups`` label of the program's answer; ValueError if malformed."""
    if not output.strip():
        return ()
    document = json.loads(output)
    labels = document.get("labels", {}) if isinstance(document, dict) else None
    if not isinstance(labels, dict):
        raise ValueError("labels must be a mapping")
    groups: list[str] = []
    for key in ("group", "groups"):
        values = labels.get(key, [])
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("a label is a list of strings")
        groups.extend(values)
    return tuple(dict.fromkeys(groups))[:MAX_GROUPS]
