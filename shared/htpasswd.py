"""Apache htpasswd files holding bcrypt hashes: parse, verify, reload on change, format lines.

Only bcrypt (``$2y$``, ``$2b$``, ``$2a$``) is accepted: the other htpasswd formats (MD5
``$apr1$``, ``{SHA}``, ``crypt``, plain text) are too weak to guard a registry, so such a
line is refused with a warning naming the file and line, and that user cannot log in. A
bcrypt hash with a cost below 10 is accepted with a warning naming file, line and user.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

log = logging.getLogger(__name__)

BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
DEFAULT_COST = 10
MIN_SAFE_COST = 10  # below this a warning: Apache's ``htpasswd -B`` writes cost 5
# bcrypt only reads 72 bytes; a longer password would be silently truncated, so refuse it.
MAX_PASSWORD_BYTES = 72
MAX_USERNAME_LENGTH = 255
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}\Z")


@dataclass(frozen=True)
class Htpasswd:
    """The usable entries of one htpasswd text and the problems found on the way."""

    users: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)  # usable entries with a low bcrypt cost

    @property
    def max_cost(self) -> int | None:
        """The highest bcrypt cost of the users, None without users."""
        return max(map(bcrypt_cost, self.users.values()), default=None)


def parse_htpasswd(text: str, source: str = "htpasswd") -> Htpasswd:
    """Parse ``user:hash`` lines; blank lines and ``#`` comments are skipped.

    Problems (a line without ``:``, a non-bcrypt hash, a duplicate user) are reported by
    ``source:line`` and user name, never by hash. As with Apache, the first entry of a
    user wins.
    """
    result = Htpasswd()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        where = f"{source}:{number}"
        if not sep or not user or len(user) > MAX_USERNAME_LENGTH:
            result.problems.append(f"{where}: not a 'user:hash' line; ignored")
        elif user in result.users:
            result.problems.append(f"{where}: user {user!r} already defined; ignored")
        elif not hashed.startswith(BCRYPT_PREFIXES):
            result.problems.append(
                f"{where}: user {user!r} has a non-bcrypt password hash; refused "
                "(re-create it with 'htpasswd -B')"
            )
        elif not _BCRYPT.match(hashed):
            result.problems.append(f"{where}: user {user!r} has a malformed bcrypt hash; refused")
        else:
            result.users[user] = hashed.encode()
            cost = bcrypt_cost(result.users[user])
            if cost < MIN_SAFE_COST:
                result.weak.append(
                    f"{where}: user {user!r} has bcrypt cost {cost}, below {MIN_SAFE_COST}: "
                    f"cheap to guess offline (re-create it with 'htpasswd -B -C {DEFAULT_COST}')"
                )
    return result


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a well-formed ``$2?$NN$...`` hash."""
    return int(hashed[4:6])


def check_password(password: str, hashed: bytes) -> bool:
    """Whether ``password`` matches a bcrypt hash (slow by design: call off the event loop)."""
    secret = password.encode()
    if len(secret) > MAX_PASSWORD_BYTES:
        return False
    return bcrypt.checkpw(secret, hashed)


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """An Apache-compatible ``$2y$`` bcrypt hash of ``password``."""
    secret = password.encode()
    if len(secret) > MAX_PASSWORD_BYTES:
        raise ValueError(f"bcrypt passwords are limited to {MAX_PASSWORD_BYTES} bytes")
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost)).decode()
    return "$2y$" + hashed[4:]  # same algorithm; $2y$ is what Apache's htpasswd writes


def format_htpasswd_line(user: str, password: str, cost: int = DEFAULT_COST) -> str:
    """``user:$2y$...`` as ``htpasswd -Bbn user password`` prints it (without newline)."""
    if not user or ":" in user or "\n" in user or len(user) > MAX_USERNAME_LENGTH:
        raise ValueError("a user name must be non-empty, at most 255 characters, without ':'")
    return f"{user}:{hash_password(password, cost)}"


class HtpasswdFile:
    """An htpasswd file kept in memory and re-read when its mtime, size or inode changes.

    ``generation`` increases with every reload, so callers can drop anything derived from
    the previous contents (such as a cache of verified credentials).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.generation = 0
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, bytes] = {}
        self.max_cost: int | None = None  # the highest bcrypt cost in the file
        self.loaded_at: float | None = None  # time.time() of the last successful read
        self.error: str | None = None  # why the last re-read failed; None once one works
        if not self.reload_if_changed():
            raise OSError(f"cannot read users file {self.path}")

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True if the contents in memory are current.

        A file that cannot be read keeps the previous contents in force (an editor or a
        deployment may be replacing it), with an error in the log.
        """
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp == self._stamp:
                return True
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            if str(error) != self.error:  # once per problem, not once per request
                log.error(
                    "users file %s unreadable, keeping previous contents: %s", self.path, error
                )
            self.error = str(error)
            return False
        parsed = parse_htpasswd(text, str(self.path))
        for problem in parsed.problems + parsed.weak:
            log.warning("%s", problem)
        self._users, self._stamp = parsed.users, stamp
        self.max_cost = parsed.max_cost
        self.generation += 1
        self.loaded_at, self.error = time.time(), None
        return True

    @property
    def entries(self) -> int:
        """How many users the contents in force hold."""
        return len(self._users)

    def __contains__(self, user: object) -> bool:
        return user in self._users

    def hash_of(self, user: str) -> bytes | None:
        """The stored bcrypt hash of ``user``, or None if the user is not in the file."""
        return self._users.get(user)


_DUMMIES: dict[int, bytes] = {}


def dummy_hash(cost: int) -> bytes:
    """A well-formed bcrypt hash at ``cost`` that no password matches.

    A fresh salt and a made-up hash part (all zero bits: a password matches it with odds of
    2**-184), so making it costs nothing whatever the cost, while checking it costs the same
    as checking a real hash of that cost.
    """
    if cost not in _DUMMIES:
        _DUMMIES[cost] = bcrypt.gensalt(rounds=cost) + b"." * 31
    return _DUMMIES[cost]
