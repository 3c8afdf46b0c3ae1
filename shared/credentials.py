"""Users from htpasswd files (bcrypt) for the token server and the registry alike, with the
verified-credentials memory in front.

bcrypt runs in a worker thread so the event loop keeps serving; concurrent logins with the
same credentials (a push asks for many tokens at once) share one bcrypt computation. At
most ``concurrent_checks`` computations run at once, in a thread pool of their own (upload
hashing in the default pool never waits behind them): one more is refused at once with
:class:`VerifierBusy` rather than queued, so a flood of guesses cannot make other users
wait behind it. Refusals are padded to the time of the costliest hash present
(``shared.refusal_timing``), so their timing does not tell whether a user exists; that time
is measured before serving (:meth:`HtpasswdAuthenticator.calibrate`) and again before the
first refusal after a reload raised the highest cost, so no refusal goes unpadded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shared.htpasswd import (
    DEFAULT_COST,
    MAX_PASSWORD_BYTES,
    HtpasswdFile,
    bcrypt_cost,
    check_password,
    dummy_hash,
)
from shared.ratelimit import Admission
from shared.refusal_timing import RefusalTimer
from shared.verified_credentials import VerifiedCredentials


class VerifierBusy(Exception):
    """Every password-check slot is taken; the caller should answer 503 and retry soon."""


def default_concurrent_checks() -> int:
    """Twice the CPUs this process may use, at least 8: more than one account's failure
    budget (5 by default), so one account's guesses never fill every slot, and few enough
    that a check waits for the CPU only a few bcrypt times."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(8, 2 * cpus)


@dataclass(frozen=True)
class Check:
    """The outcome of one bcrypt check, and its cost (None if bcrypt did not run: the
    password was too long for it)."""

    ok: bool
    cost: int | None = None


class HtpasswdAuthenticator:
    """Users of one or more htpasswd files; the first file that has a user decides."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        cache_ttl: timedelta = timedelta(seconds=60),
        cache_entries: int = 10_000,
        concurrent_checks: int = 0,
    ) -> None:
        self.files = [HtpasswdFile(path) for path in paths]
        self.cache = VerifiedCredentials(cache_ttl, cache_entries)
        self.max_checks = concurrent_checks or default_concurrent_checks()
        self._pool = ThreadPoolExecutor(self.max_checks, thread_name_prefix="bcrypt")
        self.timer = RefusalTimer()
        self.max_cost = DEFAULT_COST
        self._running = 0
        self._inflight: dict[bytes, asyncio.Future[Check]] = {}  # single flight per credential
        self._calibrating: dict[int, asyncio.Future[None]] = {}  # cost -> its timing check
        # Observers for metrics: (seconds, matched) per bcrypt check; (read) per reload.
        self.on_check: Callable[[float, bool], None] | None = None
        self.on_reload: Callable[[bool], None] | None = None
        self._unreadable = [False] * len(self.files)  # reported once per failure, not per read
        self.refresh()

    def refresh(self) -> None:
        """Re-read changed files and drop cached verifications if anything changed."""
        for index, users in enumerate(self.files):
            generation = users.generation
            current = users.reload_if_changed()
            reloaded = users.generation != generation
            failed = not current and not self._unreadable[index]
            self._unreadable[index] = not current
            if self.on_reload is not None and (reloaded or failed):
                self.on_reload(current)
        self.cache.sync(tuple(users.generation for users in self.files))
        costs = [users.max_cost for users in self.files if users.max_cost is not None]
        self.max_cost = max(costs, default=DEFAULT_COST)

    def file_of(self, user: str) -> HtpasswdFile | None:
        """The first users file that names ``user`` (the one whose entry counts)."""
        return next((users for users in self.files if user in users), None)

    async def authenticate(
        self, user: str, password: str, admission: Admission | None = None
    ) -> bool:
        """Whether ``password`` is ``user``'s. A refusal takes as long as the costliest check.

        With an ``admission``, an empty bucket raises ``Throttled`` before anything (even a
        remembered password) is looked at, and a place is taken only when a new bcrypt
        check starts, given back if it succeeds. Raises :class:`VerifierBusy` (nothing
        checked, no place kept) when no check slot is free.
        """
        started = time.monotonic()
        admission = admission or Admission([])
        await admission.check()
        self.refresh()
        mac = self.cache.mac(user, password)
        if (user, mac) in self.cache:
            return True
        version = self.cache.version
        task = self._inflight.get(mac)
        if task is None:
            if self._running >= self.max_checks:
                raise VerifierBusy
            # A task of its own, in flight from now on (the place in the buckets may take a
            # round trip to Redis: requests arriving meanwhile join it rather than take
            # places of their own); a client hanging up must not cancel the others' answer.
            task = asyncio.ensure_future(self._check(user, password, admission))
            self._inflight[mac] = task
            task.add_done_callback(lambda done: self._finished(mac, done))
        check = await asyncio.shield(task)  # Throttled when the buckets had no place
        if check.ok:
            self.cache.add(user, mac, version)
            return True
        # The cache cannot shortcut a refusal: a remembered user with a wrong password went
        # through bcrypt above and is padded here exactly like an unknown one.
        await self.calibrate()
        await asyncio.sleep(self.timer.padding(self.max_cost, time.monotonic() - started))
        return False

    async def calibrate(self) -> None:
        """Time one check at the highest cost present, unless one has been timed already.

        Called before serving, and before padding a refusal (after a reload that raised the
        highest cost): otherwise the first refusals of a cheap hash would be padded to
        nothing, or to a cheap check scaled up, which falls short under load. The check
        runs against the dummy hash in the check pool; concurrent callers share it.
        """
        cost = self.max_cost
        if cost in self.timer.seconds:
            return
        timing = self._calibrating.get(cost)
        if timing is None:
            timing = asyncio.ensure_future(self._time_check(cost))
            self._calibrating[cost] = timing
            timing.add_done_callback(lambda _: self._calibrating.pop(cost, None))
        await asyncio.shield(timing)  # a caller hanging up leaves the timing to the others

    async def _time_check(self, cost: int) -> None:
        loop = asyncio.get_running_loop()
        submitted = time.monotonic()
        await loop.run_in_executor(self._pool, check_password, "", dummy_hash(cost))
        if cost not in self.timer.seconds:  # a real check may have been timed meanwhile
            self.timer.record(cost, time.monotonic() - submitted)

    async def _check(self, user: str, password: str, admission: Admission) -> Check:
        """Take a place in the buckets and a check slot, run bcrypt, give the place back
        on success. A refusal by the buckets (``Throttled``) never holds a slot."""
        attempt = await admission.take()  # raises Throttled: nothing checked
        if self._running >= self.max_checks:  # taken by others while the place was taken
            await attempt.give_back()
            raise VerifierBusy
        self._running += 1
        loop = asyncio.get_running_loop()
        submitted = time.monotonic()
        try:
            check = await loop.run_in_executor(self._pool, self._verify, user, password)
        finally:
            self._running -= 1
        if check.cost is not None:
            # As the event loop sees it, hand-over to the thread and back included:
            # that is what a refusal without padding takes.
            elapsed = time.monotonic() - submitted
            self.timer.record(check.cost, elapsed)
            if self.on_check is not None:
                self.on_check(elapsed, check.ok)
        if check.ok:
            await attempt.give_back()
        return check

    def _finished(self, mac: bytes, task: asyncio.Future[Check]) -> None:
        self._inflight.pop(mac, None)
        if not task.cancelled():
            task.exception()  # retrieved, even if every client waiting for it hung up

    def _verify(self, user: str, password: str) -> Check:
        """Check in a worker thread; an unknown user against a dummy at the highest cost."""
        users = self.file_of(user)
        hashed = users.hash_of(user) if users is not None else None
        if hashed is None:
            hashed = dummy_hash(self.max_cost)
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            return Check(False)  # bcrypt would truncate it: refused (and padded) unchecked
        ok = check_password(password, hashed)
        return Check(ok and users is not None, bcrypt_cost(hashed))

    def close(self) -> None:
        """Stop the check threads (checks still running finish first)."""
        self._pool.shutdown(wait=True)
