"""Robot accounts: credentials for CI that are not a person's password (the ``robots`` file).

``tokenauth robot create NAME --rights ... --expires 90d`` draws a random secret, prints it
once and stores only its SHA-256 digest (a secret of 256 random bits needs no slow hash:
there is nothing to guess offline), the rights the robot is limited to and when it
expires. The file is YAML, written atomically with mode 0600, and re-read by tokenauth when
it changes, so ``create`` and ``revoke`` take effect on the next token request.

```yaml
robots:
  ci-pusher:
    secret: sha256:9f86d0…
    rights: ["repository:ci/*:pull,push"]
    created: "2026-11-28T23:50:00Z"
    expires: "2027-02-26T23:50:00Z"   # null: never
```
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.scope import ALL_ACTIONS, Scope

PREFIX = "robot$"  # the login name of robot NAME is robot$NAME, as Harbor's
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_RIGHT = re.compile(r"(repository|registry):([a-z0-9._/-]*\*?):([a-z*,]+)\Z")
_ACTIONS = frozenset({"pull", "push", "delete", ALL_ACTIONS})
_EXPIRY = re.compile(r"([0-9]{1,5})([dhm])\Z")


class RobotError(ValueError):
    """A robot file, name, right or expiry that cannot be used; the message says which."""


def digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def parse_right(text: str) -> Scope:
    """``repository:ci/*:pull,push``: a name, or a prefix ending in ``*``, and actions."""
    found = _RIGHT.match(text)
    if found is None or not found.group(2):
        raise RobotError(f"right {text!r}: expected TYPE:NAME:ACTIONS, e.g. repository:ci/*:pull")
    actions = found.group(3).split(",")
    if not set(actions) <= _ACTIONS:
        raise RobotError(f"right {text!r}: actions are pull, push, delete or *")
    return Scope.of(found.group(1), found.group(2), actions)


def parse_expiry(text: str) -> datetime.timedelta | None:
    """``90d``, ``12h``, ``30m``, or ``never`` (None)."""
    if text == "never":
        return None
    found = _EXPIRY.match(text)
    if found is None or int(found.group(1)) == 0:
        raise RobotError("--expires: expected a number of days, hours or minutes (90d) or never")
    unit = {"d": "days", "h": "hours", "m": "minutes"}[found.group(2)]
    return datetime.timedelta(**{unit: int(found.group(1))})


def _when(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _moment(value: Any, what: str) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise RobotError(f"{what}: not a time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Robot:
    name: str
    secret: str  # "sha256:<hex>" of the secret
    rights: tuple[Scope, ...]
    created: datetime.datetime | None
    expires: datetime.datetime | None

    def expired(self, now: datetime.datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def to_yaml(self) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "rights": [str(right) for right in self.rights],
            "created": _when(self.created),
            "expires": _when(self.expires),
        }


def parse_robots(text: str) -> dict[str, Robot]:
    document = yaml.safe_load(text) or {}
    entries = document.get("robots") if isinstance(document, dict) else None
    if entries is None:
        entries = {}
    if not isinstance(entries, dict):
        raise RobotError("the robots file must be a mapping with a key 'robots'")
    robots = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not NAME.match(name) or not isinstance(entry, dict):
            raise RobotError(f"robot {name!r}: invalid name or entry")
        secret, rights = entry.get("secret"), entry.get("rights") or []
        if not isinstance(secret, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", secret):
            raise RobotError(f"robot {name!r}: 'secret' must be sha256:<64 hex digits>")
        if not isinstance(rights, list) or not all(isinstance(r, str) for r in rights):
            raise RobotError(f"robot {name!r}: 'rights' must be a list of strings")
        robots[name] = Robot(
            name,
            secret,
            tuple(parse_right(r) for r in rights),
            _moment(entry.get("created"), f"robot {name!r}: created"),
            _moment(entry.get("expires"), f"robot {name!r}: expires"),
        )
    return robots


class RobotsFile:
    """The robots file, re-read when its mtime, size or inode change; a missing file holds
    no robots (``robot create`` makes it); a broken one leaves the previous robots in force."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self.robots: dict[str, Robot] = {}
        self.loaded_at: float | None = None
        self.error: str | None = None
        self.current()
        if self.error is not None:
            raise RobotError(self.error)  # at start-up a broken file is fatal

    def current(self) -> dict[str, Robot]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self.robots, self._stamp, self.error = {}, None, None
            self.loaded_at = self.loaded_at or time.time()
            return self.robots
        except OSError as error:
            self.error = str(error)
            return self.robots
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            try:
                self.robots = parse_robots(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError, RobotError) as error:
                self.error = f"{self.path}: {error}"
                return self.robots
            self._stamp, self.loaded_at, self.error = stamp, time.time(), None
        return self.robots

    def write(self, robots: dict[str, Robot]) -> None:
        """Replace the file atomically (same directory, renamed over), mode 0600."""
        text = "# tokenauth robot accounts: only digests of their secrets\n" + yaml.safe_dump(
            {"robots": {name: robot.to_yaml() for name, robot in sorted(robots.items())}},
            sort_keys=False,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".robots-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def create(
    robots: RobotsFile, name: str, rights: list[str], expires: datetime.timedelta | None
) -> str:
    """Add robot ``name``; its secret (shown once, never stored)."""
    if not NAME.match(name):
        raise RobotError("NAME: lower-case letters, digits, '.', '_' and '-', at most 64")
    current = dict(robots.current())
    if name in current:
        raise RobotError(f"robot {name!r} exists: revoke it first")
    if not rights:
        raise RobotError("--rights: at least one right is needed")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    secret = secrets.token_urlsafe(32)
    current[name] = Robot(
        name,
        digest(secret),
        tuple(parse_right(r) for r in rights),
        now,
        None if expires is None else now + expires,
    )
    robots.write(current)
    return secret


def revoke(robots: RobotsFile, name: str) -> None:
    current = dict(robots.current())
    if current.pop(name, None) is None:
        raise RobotError(f"no robot {name!r}")
    robots.write(current)
