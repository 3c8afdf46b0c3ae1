"""Configuration of retention (``storage.retention``): which tags and manifests
``registry retention`` deletes, and how finely the serving registry records pull times.

portside's own section (Distribution has none; the shape follows zot's ``retention``).
Kept apart from ``registry.config``, which imports it into the schema, because the
policies are a small language of their own with checks of their own.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.config import InvalidSetting, between, meta


def _not_negative(value: datetime.timedelta) -> datetime.timedelta:
    if value < datetime.timedelta(0):
        raise ValueError("must not be negative")
    return value


def _positive(value: datetime.timedelta) -> datetime.timedelta:
    if value <= datetime.timedelta(0):
        raise ValueError("must be positive")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _patterns(value: list[str]) -> list[str]:
    if not value or any(not pattern for pattern in value):
        raise ValueError("expected a list of one or more non-empty patterns")
    return value


@dataclass(frozen=True)
class KeepNewestConfig:
    """Keep the ``count`` most recently pushed tags matching ``tags``."""

    tags: list[str] = field(default_factory=lambda: ["*"], metadata=meta(check=_patterns))
    count: int = field(default=1, metadata=meta(check=between(1, 1_000_000)))


@dataclass(frozen=True)
class DeleteTagsConfig:
    """Select for deletion the tags matching ``tags`` pushed longer ago than ``olderthan``."""

    tags: list[str] = field(default_factory=lambda: ["*"], metadata=meta(check=_patterns))
    olderthan: datetime.timedelta = field(
        default=datetime.timedelta(0), metadata=meta(check=_not_negative)
    )


@dataclass(frozen=True)
class RetentionPolicyConfig:
    """One policy of ``storage.retention.policies`` (portside's; Distribution has none)."""

    repositories: list[str] = field(default_factory=list, metadata=meta(check=_patterns))
    keeptags: list[str] = field(default_factory=list)
    keepnewest: list[KeepNewestConfig] = field(default_factory=list)
    keeppulledwithin: datetime.timedelta | None = field(
        default=None, metadata=meta(check=_optional(_positive))
    )
    deletetags: list[DeleteTagsConfig] = field(default_factory=list)
    deleteuntaggedolderthan: datetime.timedelta | None = field(
        default=None, metadata=meta(check=_optional(_not_negative))
    )

    def __post_init__(self) -> None:
        if not self.repositories:
            raise InvalidSetting("repositories", "must be set")


@dataclass(frozen=True)
class RetentionConfig:
    """``storage.retention``: the policies ``registry retention`` (and, every
    ``interval``, the serving registry) applies, and how finely the serving registry
    records tags' pull times."""

    pullresolution: datetime.timedelta = field(
        default=datetime.timedelta(hours=1), metadata=meta(check=_positive)
    )
    # How often the serving registry applies the policies itself; 0: never (run
    # ``registry retention`` instead, e.g. from cron).
    interval: datetime.timedelta = field(
        default=datetime.timedelta(0), metadata=meta(check=_not_negative)
    )
    policies: list[RetentionPolicyConfig] = field(default_factory=list)
