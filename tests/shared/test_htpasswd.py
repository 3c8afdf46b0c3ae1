"""htpasswd files: bcrypt only, warnings naming the line, reload on change, Apache interop."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest

from shared.htpasswd import (
    HtpasswdFile,
    check_password,
    format_htpasswd_line,
    hash_password,
    parse_htpasswd,
)

PASSWORD = "s3cret"


def holds(users: HtpasswdFile, user: str, password: str) -> bool:
    """Whether the file in memory holds ``user`` with ``password`` (the hash it would give
    ``shared.credentials``, checked as that checks it)."""
    hashed = users.hash_of(user)
    return hashed is not None and check_password(password, hashed)


def apache_htpasswd() -> str:
    path = shutil.which("htpasswd")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("apache2-utils' htpasswd is required under CI")
        pytest.skip("apache2-utils' htpasswd is not installed")
    return path


def apache_line(*flags: str, user: str = "alice", password: str = PASSWORD) -> str:
    out = subprocess.run(
        [apache_htpasswd(), *flags, "-bn", user, password], check=True, capture_output=True
    )
    return out.stdout.decode().strip()


def test_apache_bcrypt_line_verifies() -> None:
    parsed = parse_htpasswd(apache_line("-B", "-C", "4") + "\n")
    assert parsed.problems == []
    assert parsed.users["alice"].startswith(b"$2y$04$")
    assert check_password("s3cret", parsed.users["alice"])
    assert not check_password("wrong", parsed.users["alice"])


@pytest.mark.parametrize("prefix", ["$2b$", "$2a$"])
def test_other_bcrypt_prefixes(prefix: str) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    parsed = parse_htpasswd(f"bob:{prefix}{hashed[4:]}\n")
    assert check_password("pw", parsed.users["bob"])


@pytest.mark.parametrize("flag", ["-m", "-s", "-d", "-p"])
def test_weak_hashes_are_refused_naming_the_line(flag: str) -> None:
    line = apache_line(flag, user="carol")
    text = "# users\n\n" + apache_line("-B", "-C", "4") + "\n" + line + "\n"
    parsed = parse_htpasswd(text, "users.htpasswd")
    assert list(parsed.users) == ["alice"]
    (problem,) = parsed.problems
    assert problem.startswith("users.htpasswd:4: user 'carol' has a non-bcrypt")
    assert line.split(":", 1)[1] not in problem  # never the hash


def test_malformed_duplicate_and_broken_bcrypt_lines() -> None:
    good = apache_line("-B", "-C", "4")
    text = f"nocolon\n{good}\n{good}\ndave:$2y$04$short\n"
    parsed = parse_htpasswd(text, "f")
    assert list(parsed.users) == ["alice"]
    assert [p.split(":")[1] for p in parsed.problems] == ["1", "3", "4"]
    assert "malformed bcrypt" in parsed.problems[2]


def test_formatted_line_is_accepted_by_apache(tmp_path: Path) -> None:
    line = format_htpasswd_line("erin", "p@ss word", cost=4)
    assert line.startswith("erin:$2y$04$")
    path = tmp_path / "htpasswd"
    path.write_text(line + "\n")
    ok = subprocess.run([apache_htpasswd(), "-vb", str(path), "erin", "p@ss word"], check=False)
    assert ok.returncode == 0
    bad = subprocess.run(
        [apache_htpasswd(), "-vb", str(path), "erin", "nope"], check=False, capture_output=True
    )
    assert bad.returncode != 0


def test_format_refuses_bad_input() -> None:
    for user in ("", "a:b", "x" * 300):
        with pytest.raises(ValueError):
            format_htpasswd_line(user, "pw", cost=4)
    with pytest.raises(ValueError, match="72"):
        hash_password("x" * 73, cost=4)
    assert not check_password("x" * 73, hash_password("x" * 72, cost=4).encode())


def test_file_reloads_on_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "users"
    path.write_text(format_htpasswd_line("alice", "one", cost=4) + "\n")
    users = HtpasswdFile(path)
    assert holds(users, "alice", "one") and "alice" in users
    assert not holds(users, "nobody", "one")
    generation = users.generation
    assert users.reload_if_changed() and users.generation == generation  # unchanged
    path.write_text(
        format_htpasswd_line("alice", "two", cost=4)
        + "\nbob:{SHA}abc\n"
        + format_htpasswd_line("frank", "f", cost=4)
        + "\n"
    )
    with caplog.at_level(logging.WARNING, logger="shared.htpasswd"):
        assert users.reload_if_changed()
    assert users.generation == generation + 1
    assert not holds(users, "alice", "one") and holds(users, "alice", "two")
    assert "bob" not in users and holds(users, "frank", "f")
    assert f"{path}:2: user 'bob' has a non-bcrypt" in caplog.text


def test_unreadable_file_keeps_previous_contents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users"
    path.write_text(format_htpasswd_line("alice", "one", cost=4) + "\n")
    users = HtpasswdFile(path)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="shared.htpasswd"):
        assert not users.reload_if_changed()
    assert holds(users, "alice", "one")
    assert "unreadable" in caplog.text
    with pytest.raises(OSError):
        HtpasswdFile(tmp_path / "missing")
