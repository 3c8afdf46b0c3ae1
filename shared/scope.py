"""The Docker token scope grammar: parse, format and intersect resource scopes.

A scope is ``type[(class)]:name:action[,action...]`` (distribution ``docs/spec/auth/scope.md``);
several are joined by spaces. A name may itself hold ``:`` (``host:5000/repo``), so the type is
split at the first ``:`` and the actions at the last. ``*`` as an action means every action.

The token server parses what clients request; the registry formats the scopes it needs into
its ``WWW-Authenticate`` challenges; both check tokens' ``access`` claims with
:meth:`Scope.allows`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.reference import MAX_NAME_LENGTH, NAME_PATTERN

ALL_ACTIONS = "*"

# Bounds on what one client may ask for: a request is a handful of scopes, never thousands.
MAX_SCOPE_LENGTH = 512
MAX_SCOPES = 64
MAX_ACTIONS = 16

_TYPE = re.compile(r"[a-z0-9]+(?:\([a-z0-9]+\))?\Z")
_ACTION = re.compile(r"(?:[a-z]+|\*)\Z")
# resourcename := [hostname '/'] component ['/' component]*  (scope.md)
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOSTNAME = rf"{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]+)?"
_NAME = re.compile(rf"(?:{_HOSTNAME}/)?{NAME_PATTERN}\Z")


class ScopeError(ValueError):
    """A scope string that does not follow the grammar; the message says why."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource scope: what may be done (``actions``) to ``type:name``.

    ``actions`` is kept de-duplicated and sorted so that ``push,pull`` and ``pull,push``
    compare equal; ``("*",)`` stands for every action.
    """

    type: str
    name: str
    actions: tuple[str, ...]
    resource_class: str = ""

    @classmethod
    def of(cls, type_: str, name: str, actions: Iterable[str], resource_class: str = "") -> Scope:
        """A scope with its actions normalised (a ``*`` among them absorbs the others)."""
        unique = set(actions)
        normal = (ALL_ACTIONS,) if ALL_ACTIONS in unique else tuple(sorted(unique))
        return cls(type_, name, normal, resource_class)

    @property
    def full_type(self) -> str:
        return f"{self.type}({self.resource_class})" if self.resource_class else self.type

    def __str__(self) -> str:
        return f"{self.full_type}:{self.name}:{','.join(self.actions)}"

    def allows(self, action: str) -> bool:
        """Whether this scope covers ``action`` (``*`` covers every action)."""
        return ALL_ACTIONS in self.actions or action in self.actions

    def intersect(self, allowed: Iterable[str]) -> Scope:
        """This scope restricted to ``allowed`` actions; ``*`` on either side means all."""
        granted = set(allowed)
        if ALL_ACTIONS in granted:
            return self
        if ALL_ACTIONS in self.actions:
            return Scope.of(self.type, self.name, granted, self.resource_class)
        return Scope.of(self.type, self.name, granted & set(self.actions), self.resource_class)

    def to_claim(self) -> dict[str, Any]:
        """The entry of a token's ``access`` claim (distribution's ``ResourceActions``)."""
        claim: dict[str, Any] = {"type": self.type, "name": self.name}
        if self.resource_class:
            claim["class"] = self.resource_class
        claim["actions"] = list(self.actions)
        return claim

    @classmethod
    def from_claim(cls, claim: Mapping[str, Any]) -> Scope:
        """Read one ``access`` entry of a token; raises :class:`ScopeError` if malformed."""
        type_, name = claim.get("type"), claim.get("name")
        actions, klass = claim.get("actions", []), claim.get("class", "")
        if not isinstance(type_, str) or not isinstance(name, str) or not isinstance(klass, str):
            raise ScopeError("access entry needs string 'type' and 'name'")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ScopeError("access entry 'actions' must be a list of strings")
        if len(actions) > MAX_ACTIONS:
            raise ScopeError("access entry has too many actions")
        return cls.of(type_, name, actions, klass)


def parse_scope(text: str) -> Scope:
    """Parse one ``type[(class)]:name:actions`` scope; raises :class:`ScopeError`."""
    if len(text) > MAX_SCOPE_LENGTH:
        raise ScopeError(f"scope longer than {MAX_SCOPE_LENGTH} characters")
    shown = text if len(text) <= 80 else text[:77] + "..."
    type_part, sep, rest = text.partition(":")
    name, sep2, action_part = rest.rpartition(":")
    if not sep or not sep2:
        raise ScopeError(f"scope {shown!r} is not of the form type:name:actions")
    if not _TYPE.match(type_part):
        raise ScopeError(f"scope {shown!r} has an invalid resource type {type_part!r}")
    type_, _, klass = type_part.rstrip(")").partition("(")
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        raise ScopeError(f"scope {shown!r} has an invalid resource name {name!r}")
    actions = action_part.split(",")
    if len(actions) > MAX_ACTIONS:
        raise ScopeError(f"scope {shown!r} has more than {MAX_ACTIONS} actions")
    for action in actions:
        if not _ACTION.match(action):
            raise ScopeError(f"scope {shown!r} has an invalid action {action!r}")
    return Scope.of(type_, name, actions, klass)


def parse_scopes(texts: Iterable[str]) -> list[Scope]:
    """Parse scope parameters, each of which may hold several space-separated scopes.

    Scopes for the same resource are merged, so the result has one entry per resource in
    the order first requested.
    """
    scopes: list[Scope] = []
    for text in texts:
        for item in text.split(" "):
            if item:
                if len(scopes) >= MAX_SCOPES:
                    raise ScopeError(f"more than {MAX_SCOPES} scopes requested")
                scopes.append(parse_scope(item))
    return merge_scopes(scopes)


def merge_scopes(scopes: Iterable[Scope]) -> list[Scope]:
    """One scope per (type, class, name) holding the union of the actions; empty ones dropped."""
    merged: dict[tuple[str, str, str], set[str]] = {}
    for scope in scopes:
        key = (scope.type, scope.resource_class, scope.name)
        merged.setdefault(key, set()).update(scope.actions)
    return [
        Scope.of(type_, name, actions, klass)
        for (type_, klass, name), actions in merged.items()
        if actions
    ]


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Scopes joined the way a challenge or an OAuth2 ``scope`` field carries them."""
    return " ".join(str(scope) for scope in scopes)
