"""Users files while serving: additions, removals and password changes take effect at once,
and the verified-credentials memory speeds up repeat logins without holding passwords."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.credentials import HtpasswdAuthenticator
from shared.htpasswd import format_htpasswd_line
from shared.verified_credentials import VerifiedCredentials
from tests.tokenauth.conftest import USERS, Setup, TokenClient, fetch_token, granted
from tokenauth.authn.htpasswd import HtpasswdUsers


async def test_users_file_reloads_while_serving(client: TokenClient, setup: Setup) -> None:
    assert (await fetch_token(client, auth=("alice", "alice-pw")))[0] == 200
    assert (await fetch_token(client, auth=("newbie", "n-pw")))[0] == 401
    setup.write_users({**USERS, "newbie": "n-pw", "alice": "changed"})
    assert (await fetch_token(client, auth=("newbie", "n-pw")))[0] == 200
    # alice's old password was just verified and remembered; the change still wins at once.
    assert (await fetch_token(client, auth=("alice", "alice-pw")))[0] == 401
    assert (await fetch_token(client, auth=("alice", "changed")))[0] == 200
    setup.write_users({"bob": "bob-pw"})
    assert (await fetch_token(client, auth=("alice", "changed")))[0] == 401


async def test_repeat_logins_look_at_the_files_only_after_a_change(
    client: TokenClient, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes to the users file and the ACL take effect on the next login without every
    login reading their status (system calls: three per login before, two for the users
    file and one per scope for the ACL): the serving app watches their directory."""
    scope = "repository:alice/app:pull"
    assert (await fetch_token(client, scope, auth=("alice", "alice-pw")))[0] == 200
    watched = {str(setup.users_file), str(setup.acl_file)}
    looks: list[str] = []
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) in watched:
            looks.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    logins = 20
    for _ in range(logins):
        status, body, _ = await fetch_token(client, scope, auth=("alice", "alice-pw"))
        assert status == 200 and granted(setup, body) == {"repository:alice/app": ("pull",)}
    # None while nothing changes, but the once-a-second recheck (for network filesystems)
    # may come round while a loaded machine serves them.
    assert len(looks) < logins // 2, looks
    # Both replaced by a rename, as editors and deployments do, and used at once.
    replacement = setup.directory / "users.new"
    replacement.write_text(format_htpasswd_line("alice", "renamed-pw", cost=4) + "\n")
    os.replace(replacement, setup.users_file)
    assert (await fetch_token(client, scope, auth=("alice", "alice-pw")))[0] == 401
    replacement = setup.directory / "acl.new"
    replacement.write_text("acl:\n  - match: {account: alice}\n    actions: [push]\n")
    os.replace(replacement, setup.acl_file)
    status, body, _ = await fetch_token(client, scope + ",push", auth=("alice", "renamed-pw"))
    assert status == 200 and granted(setup, body) == {"repository:alice/app": ("push",)}


async def test_several_users_files_first_one_decides(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text(format_htpasswd_line("alice", "one", cost=4) + "\n")
    second.write_text(
        format_htpasswd_line("alice", "two", cost=4)
        + "\n"
        + format_htpasswd_line("bob", "b", cost=4)
        + "\n"
    )
    users = HtpasswdAuthenticator([first, second])
    assert await users.authenticate("alice", "one")
    assert not await users.authenticate("alice", "two")
    assert await users.authenticate("bob", "b")
    chained = HtpasswdUsers(users)
    assert chained.credential_id("bob") is not None and chained.credential_id("carol") is None
    # The first file's entry is the one refresh tokens are bound to.
    alice_file = users.file_of("alice")
    assert alice_file is not None and alice_file.path == first
    users.close()


async def test_repeat_logins_skip_bcrypt(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(format_htpasswd_line("alice", "pw", cost=11) + "\n")  # ~0.1 s per check
    users = HtpasswdAuthenticator([path], cache_ttl=timedelta(seconds=30))
    started = time.perf_counter()
    # A push asks for several tokens at once: one bcrypt serves them all...
    assert all(await asyncio.gather(*(users.authenticate("alice", "pw") for _ in range(8))))
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(50):  # ...and later requests use the memory.
        assert await users.authenticate("alice", "pw")
    repeat = time.perf_counter() - started
    assert repeat < first, (first, repeat)
    assert not await users.authenticate("alice", "wrong")
    assert len(users.cache) == 1
    users.close()


def test_memory_holds_no_password() -> None:
    cache = VerifiedCredentials(timedelta(seconds=30))
    cache.sync(1)
    secret = "correct horse battery staple"
    cache.add("alice", cache.mac("alice", secret), 1)
    gc.collect()
    assert ("alice", cache.mac("alice", secret)) in cache
    assert ("alice", cache.mac("alice", "other")) not in cache
    assert ("bob", cache.mac("alice", secret)) not in cache
    dump = repr(cache.__dict__)
    assert secret not in dump and secret.encode().hex() not in dump
    # user/password boundaries are unambiguous
    assert cache.mac("ab", "c") != cache.mac("a", "bc")


def test_memory_expires_invalidates_and_is_bounded() -> None:
    now = [100.0]
    cache = VerifiedCredentials(timedelta(seconds=10), max_entries=2, clock=lambda: now[0])
    cache.sync("v1")
    for user in ("a", "b", "c"):
        cache.add(user, cache.mac(user, "pw"), "v1")
    assert len(cache) == 2 and ("a", cache.mac("a", "pw")) not in cache
    now[0] += 11
    assert ("c", cache.mac("c", "pw")) not in cache
    cache.add("c", cache.mac("c", "pw"), "v1")
    cache.sync("v2")
    assert len(cache) == 0
    cache.add("c", cache.mac("c", "pw"), "v1")  # verified against the old files: not kept
    assert len(cache) == 0
