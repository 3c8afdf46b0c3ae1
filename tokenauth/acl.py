"""The ACL: ordered rules deciding which requested actions a subject is granted.

For each requested scope the first rule whose ``match`` fits decides; no matching rule means
nothing is granted. ``actions: ["*"]`` grants everything requested, ``actions: []`` grants
nothing (and stops the search). A match field (``account``, ``group``, ``name``, ``type``,
``service``) is a glob (``*`` any characters, ``?`` one) or a ``/regex/`` that must match
the whole value, or a list of those (any may match); ``ip`` is a CIDR or a list of them.
Patterns may use ``${account}``, ``${group}``, ``${name}``, ``${service}``, ``${type}`` and
the named groups of other fields' regexes (``(?P<team>...)`` → ``${team}``); a
substituted value always matches literally, and an empty one (the anonymous account
``""``) makes the rule not match.

``group`` is matched against each of the identity's groups (from LDAP, an external
program): a rule that names ``group`` or ``${group}`` matches if it matches for one of them,
and never for an identity without groups. :class:`AclFile` is the ACL file as an
``Authorizer`` (``tokenauth.authz``).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.scope import ALL_ACTIONS, Scope
from tokenauth.file_changes import FileChanges

log = logging.getLogger(__name__)

FIELDS = ("type", "service", "account", "group", "name")  # evaluation order among ready fields
BUILTINS = frozenset(FIELDS)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ACTION = re.compile(r"[a-z]+\Z")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AclError(ValueError):
    """An ACL that cannot be used; the message names the rule and the problem."""


@dataclass(frozen=True)
class Pattern:
    """One glob or regex, kept as regex pieces: literal regex text or a placeholder name."""

    source: str
    pieces: tuple[tuple[str, bool], ...]  # (text, is_placeholder)

    @classmethod
    def parse(cls, text: str) -> Pattern:
        regex = len(text) >= 2 and text.startswith("/") and text.endswith("/")
        body = text[1:-1] if regex else text
        pieces: list[tuple[str, bool]] = []
        for index, part in enumerate(_PLACEHOLDER.split(body)):
            if index % 2:
                pieces.append((part, True))
            elif part:
                pieces.append((part if regex else _glob_to_regex(part), False))
        pattern = cls(text, tuple(pieces))
        try:  # validate now with a harmless stand-in for every placeholder
            re.compile(pattern.render(dict.fromkeys(pattern.placeholders, "x")))
        except re.error as error:
            raise AclError(f"invalid regular expression {text!r}: {error}") from None
        return pattern

    @property
    def placeholders(self) -> set[str]:
        return {text for text, is_name in self.pieces if is_name}

    @property
    def groups(self) -> set[str]:
        return set(re.compile(self.render(dict.fromkeys(self.placeholders, "x"))).groupindex)

    def render(self, variables: dict[str, str]) -> str:
        return "".join(re.escape(variables[t]) if name else t for t, name in self.pieces)

    def match(self, value: str, variables: dict[str, str]) -> dict[str, str] | None:
        """Named groups captured if ``value`` matches, else None."""
        if any(not variables.get(name) for name in self.placeholders):
            return None
        found = _compiled(self.render(variables)).fullmatch(value)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


@functools.lru_cache(maxsize=4096)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def _glob_to_regex(glob: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)


@dataclass(frozen=True)
class Rule:
    """One ACL rule: its 1-based position, comment, matchers and granted actions."""

    number: int
    comment: str
    matchers: tuple[tuple[str, tuple[Pattern, ...]], ...]  # in evaluation order
    networks: tuple[IPNetwork, ...] | None
    actions: frozenset[str]

    @property
    def uses_group(self) -> bool:
        return any(
            name == "group" or any("group" in p.placeholders for p in patterns)
            for name, patterns in self.matchers
        )

    def matches_any_group(
        self, values: dict[str, str], ip: IPAddress | None, groups: Sequence[str]
    ) -> bool:
        """Whether the rule matches the request for one of ``groups`` (or, if it does not
        look at groups, for the request as it is)."""
        if not self.uses_group:
            return self.matches(values, ip)
        return any(self.matches({**values, "group": group}, ip) for group in groups)

    def matches(self, values: dict[str, str], ip: IPAddress | None) -> bool:
        if self.networks is not None and (ip is None or not any(ip in n for n in self.networks)):
            return False
        variables = dict(values)
        for field_name, patterns in self.matchers:
            for pattern in patterns:
                captured = pattern.match(values[field_name], variables)
                if captured is not None:
                    variables.update(captured)
                    break
            else:
                return False
        return True

    def describe(self) -> str:
        return f"rule {self.number}" + (f" ({self.comment})" if self.comment else "")


@dataclass(frozen=True)
class Decision:
    """What one requested scope was granted, and by which rule (None: default deny)."""

    granted: Scope
    rule: Rule | None


# Decisions an ACL remembers: a decision depends only on the rules (immutable: a reload
# makes a new Acl) and on its inputs, and a client logging in again asks the same thing.
# Bounded, as the inputs are the clients' to vary: past the bound it starts over.
DECISIONS_KEPT = 4096


class Acl:
    """An ordered, immutable list of rules."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self._decisions: dict[
            tuple[str, str, IPAddress | None, Scope, tuple[str, ...]], Decision
        ] = {}

    def decide(
        self,
        account: str,
        service: str,
        ip: IPAddress | None,
        scope: Scope,
        groups: Sequence[str] = (),
    ) -> Decision:
        """The first matching rule's grant of ``scope`` (matching the patterns of every
        rule in turn cost 7% of a repeated login's CPU, hence the memory of decisions)."""
        key = (account, service, ip, scope, tuple(groups))
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(account, service, ip, scope, groups)
            if len(self._decisions) >= DECISIONS_KEPT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _decide(
        self,
        account: str,
        service: str,
        ip: IPAddress | None,
        scope: Scope,
        groups: Sequence[str],
    ) -> Decision:
        values = {"account": account, "service": service, "type": scope.type, "name": scope.name}
        for rule in self.rules:
            if rule.matches_any_group(values, ip, groups):
                return Decision(scope.intersect(rule.actions), rule)
        return Decision(scope.intersect(()), None)


def parse_acl(document: Any) -> Acl:
    """Build an ACL from parsed YAML ``{"acl": [rule, ...]}``; raises :class:`AclError`."""
    if not isinstance(document, dict) or set(document) != {"acl"}:
        raise AclError("the ACL file must be a mapping with a single key 'acl'")
    entries = document["acl"] or []
    if not isinstance(entries, list):
        raise AclError("'acl' must be a list of rules")
    rules = []
    for number, entry in enumerate(entries, start=1):
        comment = entry.get("comment") if isinstance(entry, dict) else None
        label = f"rule {number}" + (f" ({comment})" if isinstance(comment, str) else "")
        try:
            rules.append(_parse_rule(number, entry))
        except AclError as error:
            raise AclError(f"{label}: {error}") from None
    return Acl(rules)


def _parse_rule(number: int, entry: Any) -> Rule:
    if not isinstance(entry, dict):
        raise AclError("a rule must be a mapping with 'match' and 'actions'")
    unknown = set(entry) - {"match", "actions", "comment"}
    if unknown:
        raise AclError(f"unknown key(s) {sorted(unknown)}; expected match, actions, comment")
    comment = entry.get("comment", "")
    if not isinstance(comment, str):
        raise AclError("'comment' must be a string")
    match = entry.get("match") or {}
    if not isinstance(match, dict):
        raise AclError("'match' must be a mapping")
    unknown = set(match) - {*FIELDS, "ip"}
    if unknown:
        raise AclError(f"unknown match field(s) {sorted(unknown)}; expected {[*FIELDS, 'ip']}")
    patterns = {name: _patterns(name, match[name]) for name in FIELDS if name in match}
    networks = _networks(match["ip"]) if "ip" in match else None
    if "actions" not in entry:
        raise AclError("'actions' is required (use [] to deny)")
    actions = entry["actions"]
    if not isinstance(actions, list) or not all(
        isinstance(a, str) and (a == ALL_ACTIONS or _ACTION.match(a)) for a in actions
    ):
        raise AclError("'actions' must be a list of actions such as pull, push, delete or '*'")
    return Rule(number, comment, _order(patterns), networks, frozenset(actions))


def _patterns(name: str, value: Any) -> tuple[Pattern, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) for item in items):
        raise AclError(f"match.{name} must be a pattern string or a list of them")
    try:
        return tuple(Pattern.parse(item) for item in items)
    except AclError as error:
        raise AclError(f"match.{name}: {error}") from None


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    items = value if isinstance(value, list) else [value]
    try:
        return tuple(ipaddress.ip_network(str(item), strict=False) for item in items)
    except ValueError:
        raise AclError("match.ip must be an address or CIDR (or a list of them)") from None


def _order(patterns: dict[str, tuple[Pattern, ...]]) -> tuple[tuple[str, tuple[Pattern, ...]], ...]:
    """Fields in an order where every captured-group placeholder is known when needed."""
    for name, items in patterns.items():
        clash = {g for p in items for g in p.groups} & BUILTINS
        if clash:
            raise AclError(f"match.{name}: group name(s) {sorted(clash)} are reserved")
    known: set[str] = set()
    ordered: list[tuple[str, tuple[Pattern, ...]]] = []
    pending = dict(patterns)
    while pending:
        ready = [n for n in FIELDS if n in pending and _needs(pending[n]) <= known]
        if not ready:
            missing = sorted(set().union(*map(_needs, pending.values())) - known)
            raise AclError(f"unknown or circular placeholder(s) {missing}")
        for name in ready:
            ordered.append((name, pending.pop(name)))
            known |= {g for p in ordered[-1][1] for g in p.groups}
    return tuple(ordered)


def _needs(patterns: tuple[Pattern, ...]) -> set[str]:
    """The placeholders of ``patterns`` that are not request values (i.e. captured groups)."""
    return {name for p in patterns for name in p.placeholders - BUILTINS}


class AclFile:
    """The ACL file, re-read when it changes; a broken new version leaves the old in force."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._failure = ""
        self.on_reload: Callable[[bool], None] | None = None  # (loaded), for metrics
        self.acl = Acl()
        self.acl = self._load()  # at start-up an invalid file is fatal
        self.loaded_at = time.time()  # of the ACL in force
        self.changes = FileChanges([self.path])  # looked at only after a change, serving

    async def watching(self) -> AsyncIterator[None]:
        """A ``cleanup_ctx``: watch the file's directory while the app runs."""
        self.changes.start()
        yield
        self.changes.stop()

    def _load(self) -> Acl:
        stat = self.path.stat()
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        try:
            document = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise AclError(f"{self.path}: not valid YAML: {error}") from None
        try:
            return parse_acl(document)
        except AclError as error:
            raise AclError(f"{self.path}: {error}") from None

    def current(self) -> Acl:
        """The ACL in force, after re-reading the file if its mtime, size or inode changed
        (looked at only when it may have changed: ``tokenauth.file_changes``)."""
        if not self.changes.possibly_changed:
            return self.acl
        self.changes.taken()
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size, stat.st_ino) != self._stamp:
                self.acl = self._load()
                self.loaded_at = time.time()
                log.info("reloaded ACL %s (%d rules)", self.path, len(self.acl.rules))
                self._failure = ""
                if self.on_reload is not None:
                    self.on_reload(True)
        except (OSError, AclError) as error:
            if str(error) != self._failure:  # once per problem, not once per request
                log.error("ACL not reloaded, the previous one stays in force: %s", error)
                if self.on_reload is not None:
                    self.on_reload(False)
            self._failure = str(error)
        return self.acl

    @property
    def error(self) -> str | None:
        """Why the last re-read failed (the previous ACL stays in force); None if it worked."""
        return self._failure or None
