"""Configuration of event notifications (``notifications``): Distribution's endpoints,
plus portside's own bounds on what waits for delivery and where it is kept over a restart.

Kept apart from ``registry.config``, which imports it into the schema. Distribution 2.8's
and 3.x's keys are read the same way (``ignoredmediatypes`` and ``ignore.mediatypes`` both).
"""

from __future__ import annotations

import datetime
import urllib.parse
from dataclasses import dataclass, field

from shared.config import InvalidSetting, between, meta

ACTIONS = ("push", "pull", "mount", "delete")


def _endpoint_url(value: str) -> str:
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError("expected an absolute http:// or https:// URL")
    return value


def _actions(value: list[str]) -> list[str]:
    unknown = [action for action in value if action not in ACTIONS]
    if unknown:
        raise ValueError("expected actions from " + ", ".join(ACTIONS))
    return value


def _not_negative(value: datetime.timedelta) -> datetime.timedelta:
    if value < datetime.timedelta(0):
        raise ValueError("must not be negative")
    return value


@dataclass(frozen=True)
class IgnoreConfig:
    """``ignore``: events an endpoint is not sent, by target media type or by action."""

    mediatypes: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list, metadata=meta(check=_actions))


@dataclass(frozen=True)
class EndpointConfig:
    """One of ``notifications.endpoints``: where events are POSTed and how persistently."""

    name: str = ""
    disabled: bool = False
    url: str = field(default="", metadata=meta(check=lambda v: _endpoint_url(v) if v else v))
    headers: dict[str, list[str]] = field(default_factory=dict)
    # Distribution's defaults (configuration.go): 1s, 10 failures, 1s.
    timeout: datetime.timedelta = field(
        default=datetime.timedelta(seconds=1), metadata=meta(check=_not_negative)
    )
    threshold: int = field(default=10, metadata=meta(check=between(0, 1_000_000)))
    backoff: datetime.timedelta = field(
        default=datetime.timedelta(seconds=1), metadata=meta(check=_not_negative)
    )
    ignoredmediatypes: list[str] = field(default_factory=list)
    ignore: IgnoreConfig = field(default_factory=IgnoreConfig)
    # portside's own: at most this many events wait in memory; past it the oldest go.
    queuelimit: int = field(default=10_000, metadata=meta(check=between(1, 10_000_000)))

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidSetting("name", "must be set")
        if not self.disabled and not self.url:
            raise InvalidSetting("url", "must be set")

    @property
    def ignored_media_types(self) -> frozenset[str]:
        return frozenset(self.ignoredmediatypes) | frozenset(self.ignore.mediatypes)


@dataclass(frozen=True)
class EventsConfig:
    includereferences: bool = False


@dataclass(frozen=True)
class NotificationsConfig:
    """``notifications``: the endpoints every event is sent to."""

    events: EventsConfig = field(default_factory=EventsConfig)
    endpoints: list[EndpointConfig] = field(default_factory=list)
    # portside's own: where events not yet delivered are kept over a clean restart;
    # empty: ``<storage.filesystem.rootdirectory>/_notifications`` with filesystem storage,
    # nowhere (kept in memory only) with any other driver.
    queuedirectory: str = ""

    def __post_init__(self) -> None:
        names = [endpoint.name for endpoint in self.endpoints]
        if len(set(names)) != len(names):
            raise InvalidSetting("endpoints", "names must be unique")

    @property
    def active_endpoints(self) -> list[EndpointConfig]:
        return [endpoint for endpoint in self.endpoints if not endpoint.disabled]
