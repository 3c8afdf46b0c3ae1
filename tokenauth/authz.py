"""Authorization: which of the requested actions an identity gets, scope by scope.

An :class:`Authorizer` answers one requested scope with an :class:`AccessDecision` (the
actions granted, possibly none) or None, "no rule of mine matches", and the next one in
the :class:`AuthorizerChain` is asked; when none answers, nothing is granted (default
deny). The ACL file is one authorizer (:class:`AclAuthorizer`, a no-match being the end
of its rules), the external program another (``tokenauth.authz_external``). A robot
account's own rights are intersected with whatever the chain grants. The decision of
each scope (which authorizer, which rule) is written into the request's audit record
here, where it is made.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.scope import Scope
from tokenauth import audit
from tokenauth.acl import AclFile, IPAddress
from tokenauth.authn.base import Identity
from tokenauth.health import acl_file_health


class AuthorizerUnavailable(Exception):
    """An authorizer cannot decide now (the external program failed or timed out)."""


@dataclass(frozen=True)
class AccessRequest:
    """One requested scope, with who asks, for which service, from where."""

    identity: Identity
    service: str
    ip: IPAddress | None
    scope: Scope


@dataclass(frozen=True)
class AccessDecision:
    """What a scope was granted, and the number of the rule that decided it, if any."""

    granted: Scope
    rule: int | None = None


class Authorizer(Protocol):
    name: str  # the key it is configured by: acl, extauthz

    async def authorize(self, request: AccessRequest) -> AccessDecision | None:
        """The decision for one scope, or None: not mine, ask the next authorizer."""
        ...

    def health(self) -> dict[str, Any]:
        """The entry for ``GET /health`` (never a secret)."""
        ...


class AclAuthorizer:
    """The ACL file: the first matching rule decides; past the last rule, not mine."""

    name = "acl"

    def __init__(self, acl: AclFile) -> None:
        self.acl = acl

    async def authorize(self, request: AccessRequest) -> AccessDecision | None:
        identity = request.identity
        decision = self.acl.current().decide(
            identity.account, request.service, request.ip, request.scope, identity.groups
        )
        if decision.rule is None:
            return None
        return AccessDecision(decision.granted, decision.rule.number)

    def health(self) -> dict[str, Any]:
        return acl_file_health(self.acl)


class AuthorizerChain:
    """Authorizers in the order they are asked."""

    def __init__(self, members: Sequence[Authorizer]) -> None:
        self.members = tuple(members)

    def health(self) -> dict[str, dict[str, Any]]:
        return {member.name: member.health() for member in self.members}

    async def authorize(
        self, identity: Identity, service: str, ip: str | None, scopes: Sequence[Scope]
    ) -> list[Scope]:
        """Requested ∩ allowed (∩ a robot's own rights); scopes granted nothing left out."""
        record = audit.current()
        record.requested = list(scopes)
        address = client_address(ip)
        granted = []
        for scope in scopes:
            decision, name = AccessDecision(scope.intersect(())), None
            for member in self.members:
                answer = await member.authorize(AccessRequest(identity, service, address, scope))
                if answer is not None:
                    decision, name = answer, member.name
                    break
            allowed = _within(decision.granted, identity.limits)
            record.rules.append(decision.rule)
            record.authorizers.append(name)
            if allowed.actions:
                granted.append(allowed)
        record.granted = granted
        return granted


def _within(granted: Scope, limits: tuple[Scope, ...] | None) -> Scope:
    """``granted`` cut down to what ``limits`` (a robot's rights) allow of it."""
    if limits is None or not granted.actions:
        return granted
    allowed: set[str] = set()
    for limit in limits:
        if limit.type == granted.type and _name_matches(limit.name, granted.name):
            allowed |= set(limit.actions)
    return granted.intersect(allowed)


def _name_matches(pattern: str, name: str) -> bool:
    """A robot right's name: exact, or a trailing ``*`` for anything below a prefix."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


@functools.lru_cache(maxsize=4096)
def client_address(ip: str | None) -> IPAddress | None:
    """The client address as the ACL's ``ip`` field compares it (IPv4-mapped unwrapped).

    Remembered (bounded): the same clients log in again and again, and parsing the text
    was a few percent of a token."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
