"""The interface every access controller implements, and the 401 challenge it raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from shared import errors
from shared.errors import ErrorCode, RegistryError
from shared.scope import ALL_ACTIONS, Scope


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authenticated (or anonymous) caller may do."""

    account: str
    access: tuple[Scope, ...] = ()
    everything: bool = False
    # Every (type, class, name, action) the access grants, ``*`` kept as an action: built
    # once, so a check is a few set lookups instead of a scan of the access list (a
    # cached token's grant answers every request its client sends).
    _granted: frozenset[tuple[str, str, str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        granted = frozenset(
            (scope.type, scope.resource_class, scope.name, action)
            for scope in self.access
            for action in scope.actions
        )
        object.__setattr__(self, "_granted", granted)

    def allows(self, scope: Scope) -> bool:
        if self.everything:
            return True
        granted = self._granted
        kind, klass, name = scope.type, scope.resource_class, scope.name
        return all(
            (kind, klass, name, action) in granted or (kind, klass, name, ALL_ACTIONS) in granted
            for action in scope.actions
        )


class Challenge(RegistryError):
    """401 (or 403) with the ``WWW-Authenticate`` header a client needs to authenticate."""

    def __init__(
        self, header: str, error: ErrorCode = errors.UNAUTHORIZED, message: str | None = None
    ) -> None:
        super().__init__(error, message, status=401, headers={"WWW-Authenticate": header})


class AccessController(Protocol):
    async def authorize(self, request: web.Request, needed: Sequence[Scope]) -> Grant:
        """The caller's grant; raise :class:`Challenge` when they must (re)authenticate.

        ``needed`` is what the request requires; a controller that cannot tell scopes apart
        (htpasswd) grants everything to anyone it authenticates.
        """
        ...

    def insufficient(self, request: web.Request, needed: Sequence[Scope]) -> Challenge:
        """The challenge for an authenticated caller that lacks some of ``needed``."""
        ...

    async def start(self) -> None:
        """Prepare before the first request (once the event loop runs)."""
        ...

    async def close(self) -> None: ...
