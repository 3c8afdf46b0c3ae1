"""``registry htpasswd`` (and the ``htpasswd`` entry point): Apache htpasswd's bcrypt mode.

Understands the flags the guide uses — ``htpasswd -Bbn USER PASSWORD`` prints a line —
plus ``-c`` (create the file), ``-i`` (password from stdin), ``-C COST`` and ``-D``
(delete a user), so a users file can be kept without Apache's tools. Only bcrypt is
written: ``-B`` is implied, and the weaker hashes (-m, -s, -p, -d) are refused.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shared.htpasswd import DEFAULT_COST, format_htpasswd_line

USAGE = """\
usage: htpasswd [-ciBDb] [-C cost] passwordfile username [password]
       htpasswd -n[iBb] [-C cost] username [password]
  -n  print the line instead of updating a file   -c  create a new file
  -b  take the password from the command line     -i  read the password from stdin
  -B  bcrypt (the only format portside writes)     -C  bcrypt cost, 4 to 31 (default 10)
  -D  delete the user from the file
"""


class UsageError(Exception):
    pass


def htpasswd_main(argv: Sequence[str]) -> int:
    try:
        return _run(list(argv))
    except UsageError as error:
        print(f"htpasswd: {error}\n{USAGE}", file=sys.stderr, end="")
        return 2
    except (OSError, ValueError) as error:
        print(f"htpasswd: {error}", file=sys.stderr)
        return 1


def _run(argv: list[str]) -> int:
    flags: set[str] = set()
    cost = DEFAULT_COST
    while argv and argv[0].startswith("-") and len(argv[0]) > 1:
        arg = argv.pop(0)
        for position, flag in enumerate(arg[1:], start=1):
            if flag == "C":
                value = arg[position + 1 :] or (argv.pop(0) if argv else "")
                if not (value.isascii() and value.isdigit()) or not 4 <= int(value) <= 31:
                    raise UsageError("-C takes a bcrypt cost from 4 to 31")
                cost = int(value)
                break
            if flag in "mspd2":
                raise UsageError(f"-{flag}: only bcrypt (-B) is supported")
            if flag not in "nbBciDv":
                raise UsageError(f"unknown option -{flag}")
            flags.add(flag)
    to_stdout = "n" in flags
    expected = (1 if to_stdout else 2) + (1 if "b" in flags else 0)
    if "D" in flags:
        expected = 2
    if len(argv) != expected:
        raise UsageError("wrong number of arguments")
    path = None if to_stdout else Path(argv.pop(0))
    user = argv.pop(0)
    if path is not None and "D" in flags:
        _write_users(path, user, None, create=False)
        return 0
    password = _password(flags, argv)
    line = format_htpasswd_line(user, password, cost)
    if path is None:
        print(line)
    else:
        _write_users(path, user, line, create="c" in flags)
    return 0


def _password(flags: set[str], argv: list[str]) -> str:
    if "b" in flags:
        return argv[0]
    if "i" in flags:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Re-type new password: ") != first:
        raise ValueError("password verification error")
    return first


def _write_users(path: Path, user: str, line: str | None, create: bool) -> None:
    """Replace (or add, or with ``line`` None remove) the user's line, atomically."""
    lines: list[str] = []
    if not create:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [entry for entry in lines if entry.partition(":")[0] != user]
    if line is not None:
        kept.append(line)
    handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write("".join(entry + "\n" for entry in kept))
    os.chmod(temporary, 0o640)
    os.replace(temporary, path)


def main() -> int:
    """The ``htpasswd`` console script."""
    return htpasswd_main(sys.argv[1:])
