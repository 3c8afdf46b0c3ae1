"""Matching ``/v2/<name>/<resource>`` paths, where the name itself contains slashes.

Paths are matched raw (still percent-encoded), and every piece is then checked against
its grammar, so an encoded ``%2e%2e`` or ``%2f`` can never become a path component.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from shared import errors
from shared.errors import RegistryError
from shared.reference import is_valid_name

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """One resource under a repository: its path suffix and a handler per method."""

    resource: str
    suffix: str
    handlers: Mapping[str, Handler]
    pattern: re.Pattern[str] = field(init=False)
    marker: str = field(init=False)

    def __post_init__(self) -> None:
        # The name is matched lazily: the suffix's parameters hold no slash, so the split
        # of a full match is the same either way, and names are short next to digests
        # (a greedy name ran to the path's end and backed off over the whole digest).
        object.__setattr__(self, "pattern", re.compile(rf"(?P<name>.+?){self.suffix}"))
        object.__setattr__(self, "marker", literal_prefix(self.suffix))


def literal_prefix(pattern: str) -> str:
    """The fixed text every match of ``pattern`` starts with (up to its first special
    character; a quantified last character is left out): a path without it cannot match,
    found by one substring search instead of a regular expression's backtracking."""
    for index, char in enumerate(pattern):
        if char in "?*+{":
            return pattern[: index - 1]
        if char in "()[].\\|^$":
            return pattern[:index]
    return pattern


@dataclass(frozen=True, slots=True)
class RouteMatch:
    resource: str
    name: str
    params: Mapping[str, str]
    handler: Handler


def match_route(routes: tuple[Route, ...], tail: str, method: str) -> RouteMatch:
    """Find the route for ``tail`` (the raw path after ``/v2/``) and ``method``."""
    for route in routes:
        if route.marker not in tail:
            continue
        found = route.pattern.fullmatch(tail)
        if found is None:
            continue
        name = found.group("name")
        if not is_valid_name(name):
            raise RegistryError(errors.NAME_INVALID, detail={"name": name[:300]})
        handler = route.handlers.get(method)
        if handler is None:
            allowed = ", ".join(sorted(route.handlers))
            raise RegistryError(
                errors.UNSUPPORTED,
                f"method {method} is not allowed here",
                status=405,
                headers={"Allow": allowed},
            )
        params = {k: v for k, v in found.groupdict().items() if k != "name"}
        return RouteMatch(route.resource, name, params, handler)
    raise RegistryError(errors.UNSUPPORTED, "no such endpoint", status=404)
