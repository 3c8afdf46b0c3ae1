"""Configuration of the web interface (``ui``): portside's own section, since
Distribution has no interface. Off by default; see docs/ui.md."""

from __future__ import annotations

import datetime
import urllib.parse
from dataclasses import dataclass, field

from shared.config import meta

MIN_SESSION = datetime.timedelta(minutes=1)
MAX_SESSION = datetime.timedelta(days=7)


def _session_lifetime(value: datetime.timedelta) -> datetime.timedelta:
    if not MIN_SESSION <= value <= MAX_SESSION:
        raise ValueError("must be between 1m and 168h")
    return value


def _realm(value: str) -> str:
    if value:
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("expected an absolute http:// or https:// URL")
    return value


@dataclass(frozen=True)
class UiSessionConfig:
    # How long a login lasts, from the login on (the cookie is never extended).
    lifetime: datetime.timedelta = field(
        default=datetime.timedelta(hours=8), metadata=meta(check=_session_lifetime)
    )


@dataclass(frozen=True)
class UiConfig:
    enabled: bool = False
    # The token server's address as the registry itself reaches it, for the login's
    # password grant (empty: auth.token.realm, the address clients are sent to).
    tokenrealm: str = field(default="", metadata=meta(check=_realm))
    session: UiSessionConfig = field(default_factory=UiSessionConfig)
