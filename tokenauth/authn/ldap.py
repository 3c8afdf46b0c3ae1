"""An LDAP directory as an authenticator (``ldap``), with ldap3.

A login searches the user as the service account (``binddn``) with ``filter`` (the
account escaped per RFC 4515), binds as the entry found to check the password, and reads
its groups (``memberOf``-style DN values, or a group search). A user the filter does not
find (absent, or excluded as disabled by the filter) is "not mine"; a failed bind is a
wrong password. A directory that cannot be reached, or answers out of time, raises
``AuthenticatorUnavailable`` (503), never a refusal.

ldap3 is synchronous, so every directory operation runs in a thread pool of ``poolsize``
threads, each using a service-account connection of a pool of as many (kept open and
reused; discarded after an error). A user's bind uses a connection of its own, closed at
once, so no connection ever stays bound as a user. Verified passwords are remembered as
for htpasswd (``shared.verified_credentials``: an HMAC, never the password) together with
the groups read, for ``credentialcache.ttl``: a password changed or an account disabled
in the directory is noticed at the latest that long after (a new password works at once).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import queue
import ssl
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names pyasn1 0.6 deprecated (tagMap, typeMap): harmless, but
    # the tests turn warnings into errors. Nothing else of ldap3 warns.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

from shared.ratelimit import Admission
from shared.verified_credentials import VerifiedCredentials
from tokenauth.authn.base import (
    DENIED,
    MAX_GROUPS,
    NOT_MINE,
    AuthenticatorUnavailable,
    Identity,
    Outcome,
    Standing,
)
from tokenauth.config import CredentialCacheConfig, LdapConfig, split_address
from tokenauth.health import when

log = logging.getLogger(__name__)

MAX_PASSWORD_BYTES = 1024  # a directory password; longer is no password anyone types


class LdapSetupError(ValueError):
    """A setting that cannot be used (unreadable password file or CA, bad address)."""


class Unreachable(Exception):
    """The directory did not answer (connection, TLS, timeout)."""


class LdapAuthenticator:
    name = "ldap"

    def __init__(self, config: LdapConfig, cache: CredentialCacheConfig) -> None:
        self.config = config
        try:
            host, port = split_address(config.addr)
        except Exception:
            raise LdapSetupError("addr: expected host:port") from None
        self.bind_password = ""
        if config.bindpasswordfile:
            try:
                self.bind_password = Path(config.bindpasswordfile).read_text().strip()
            except OSError as error:
                raise LdapSetupError(f"bindpasswordfile: {error.strerror}") from None
        tls = None
        if config.tls != "none":
            try:
                context = ssl.create_default_context(cafile=config.cacertificate or None)
            except (OSError, ssl.SSLError) as error:
                raise LdapSetupError(f"cacertificate: {error}") from None
            if config.insecuretlsskipverify:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            tls = _ContextTls(context)
        self.timeout = config.timeout.total_seconds()
        self._host, self._port, self._tls = host or "localhost", port, tls
        self.cache = VerifiedCredentials(cache.ttl, cache.maxentries)
        self._groups: dict[str, tuple[str, ...]] = {}  # of the users the cache holds
        self._inflight: dict[bytes, asyncio.Future[Identity | Outcome]] = {}
        self._pool = ThreadPoolExecutor(config.poolsize, thread_name_prefix="ldap")
        self._idle: queue.SimpleQueue[ldap3.Connection] = queue.SimpleQueue()
        self.error: str | None = None  # of the last operation; None once one worked
        self.checked_at: float | None = None
        # Observer for metrics: (authenticator, seconds, result) per directory check.
        self.on_check: Callable[[str, float, str], None] | None = None

    # -- the event loop's side -------------------------------------------------------

    async def authenticate(
        self, user: str, password: str, admission: Admission
    ) -> Identity | Outcome:
        if not password or len(password.encode()) > MAX_PASSWORD_BYTES:
            # An empty password would be an unauthenticated bind, which LDAP servers
            # accept as a success (RFC 4513 5.1.2): never a login.
            return DENIED
        mac = self.cache.mac(user, password)
        if (user, mac) in self.cache and user in self._groups:
            return Identity(user, self._groups[user], authenticator=self.name)
        # Concurrent logins with the same credentials (a push asks for many tokens at
        # once) share one directory check, and so one place in the failure buckets.
        task = self._inflight.get(mac)
        if task is None:
            task = asyncio.ensure_future(self._check(user, password, mac, admission))
            self._inflight[mac] = task
            task.add_done_callback(lambda done: self._checked(mac, done))
        return await asyncio.shield(task)  # a client hanging up leaves it to the others

    def _checked(self, mac: bytes, task: asyncio.Future[Identity | Outcome]) -> None:
        self._inflight.pop(mac, None)
        if not task.cancelled():
            task.exception()  # retrieved even if every waiter has gone

    async def _check(
        self, user: str, password: str, mac: bytes, admission: Admission
    ) -> Identity | Outcome:
        started = time.monotonic()
        found = await self._call(self._lookup, user)
        if found is None:
            self._observe(started, "unknown")
            return NOT_MINE
        dn, groups = found
        attempt = await admission.take()
        ok = await self._call(self._bind_as, dn, password)
        self._observe(started, "match" if ok else "mismatch")
        if not ok:
            return DENIED
        await attempt.give_back()
        self.cache.add(user, mac, self.cache.version)
        self._groups.pop(user, None)
        while len(self._groups) >= self.cache.max_entries:  # oldest first, as the cache
            del self._groups[next(iter(self._groups))]
        self._groups[user] = groups
        return Identity(user, groups, authenticator=self.name)

    async def standing(self, account: str) -> Standing | None:
        """Found by the filter now (present and not disabled): the DN's digest binds refresh
        tokens, so they end when the entry is removed, renamed or filtered out."""
        found = await self._call(self._lookup, account)
        if found is None:
            return None
        dn, groups = found
        digest = hashlib.sha256(b"portside-ldap\0" + dn.encode()).digest()[:16]
        credential = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return Standing(Identity(account, groups, authenticator=self.name), credential)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, function, *args)
        except Unreachable as error:
            if str(error) != self.error:
                log.error("LDAP directory %s unreachable: %s", self.config.addr, error)
            self.error, self.checked_at = str(error), time.time()
            raise AuthenticatorUnavailable("the LDAP directory cannot be reached") from None
        if self.error is not None:
            log.info("LDAP directory %s reachable again", self.config.addr)
        self.error, self.checked_at = None, time.time()
        return result

    def _observe(self, started: float, result: str) -> None:
        if self.on_check is not None:
            self.on_check(self.name, time.monotonic() - started, result)

    def health(self) -> list[dict[str, Any]]:
        return [
            {
                "addr": self.config.addr,
                "state": "unavailable" if self.error else "ok",
                "checked_at": when(self.checked_at),
                "error": self.error,
            }
        ]

    async def calibrate(self) -> None:
        """Open one service connection before serving; a directory down is logged, not
        fatal (logins answer 503 until it is back)."""
        with contextlib.suppress(AuthenticatorUnavailable):
            await self._call(self._warm_up)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        while not self._idle.empty():
            _unbind(self._idle.get_nowait())

    # -- the worker threads' side ----------------------------------------------------

    def _connection(self, user: str | None, password: str | None) -> ldap3.Connection:
        # A Server object of its own each time: ldap3 remembers an address that failed as
        # unavailable for a while (and shares that state unlocked), which would keep a
        # directory that is back unreachable.
        server = ldap3.Server(
            self._host,
            port=self._port,
            use_ssl=self.config.tls == "always",
            tls=self._tls,
            connect_timeout=self.timeout,
            get_info=ldap3.NONE,
        )
        connection = ldap3.Connection(
            server,
            user=user,
            password=password,
            receive_timeout=max(1, math.ceil(self.timeout)),  # ldap3 packs it as an int
            read_only=True,
            raise_exceptions=False,
        )
        try:
            connection.open()  # returns nothing: raises, or leaves the connection closed
            if connection.closed:
                raise Unreachable(_why(connection))
            if self.config.tls == "starttls" and not connection.start_tls():
                raise Unreachable(f"StartTLS failed: {_why(connection)}")
        except LDAPException as error:
            _unbind(connection)
            raise Unreachable(_exception_text(error)) from None
        except Unreachable:
            _unbind(connection)
            raise
        return connection

    def _service(self) -> ldap3.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        connection = self._connection(self.config.binddn or None, self.bind_password or None)
        try:
            bound = connection.bind()
        except LDAPException as error:
            _unbind(connection)
            raise Unreachable(_exception_text(error)) from None
        if not bound:
            why = _why(connection)
            _unbind(connection)
            raise Unreachable(f"the service account cannot bind: {why}")
        return connection

    def _warm_up(self) -> None:
        self._idle.put(self._service())

    def _search(self, base: str, search_filter: str, attributes: list[str], limit: int) -> Any:
        """Entries found with a pooled service connection (retried once on a fresh one: a
        pooled connection may have been closed by the server meanwhile)."""
        for retry in (False, True):
            connection = self._service()
            try:
                connection.search(
                    base,
                    search_filter,
                    search_scope=ldap3.SUBTREE,
                    attributes=attributes,
                    size_limit=limit,
                    time_limit=max(1, int(self.timeout)),
                )
            except LDAPException as error:
                _unbind(connection)
                if retry:
                    raise Unreachable(_exception_text(error)) from None
                continue
            code = connection.result.get("result") if connection.result else None
            if code not in (0, 4, 32):  # success, size limit exceeded, no such object
                _unbind(connection)
                if retry:
                    raise Unreachable(f"search failed: {_why(connection)}")
                continue
            entries = list(connection.entries)
            self._idle.put(connection)
            return entries
        raise Unreachable("search failed")  # not reached

    def _lookup(self, account: str) -> tuple[str, tuple[str, ...]] | None:
        """The DN and groups of the one entry ``filter`` finds for ``account``."""
        config = self.config
        search_filter = config.filter.replace("${account}", escape_filter_chars(account))
        attributes = [config.groupattribute] if not config.groupfilter else []
        entries = self._search(config.base, search_filter, attributes, 2)
        if len(entries) != 1:
            if entries:
                log.warning("LDAP filter finds several entries for one account; refused")
            return None
        entry = entries[0]
        dn = entry.entry_dn
        if config.groupfilter:
            group_filter = config.groupfilter.replace(
                "${account}", escape_filter_chars(account)
            ).replace("${dn}", escape_filter_chars(dn))
            groups = self._search(
                config.groupbase, group_filter, [config.groupnameattribute], MAX_GROUPS
            )
            names = [str(g[config.groupnameattribute].value) for g in groups]
        else:
            values = entry[config.groupattribute].values if config.groupattribute in entry else []
            names = [_rdn_value(str(value)) for value in values]
        return dn, tuple(dict.fromkeys(n for n in names if n))[:MAX_GROUPS]

    def _bind_as(self, dn: str, password: str) -> bool:
        connection = self._connection(dn, password)
        try:
            if connection.bind():
                return True
            if not connection.result:  # no answer at all: the directory, not the password
                raise Unreachable(_why(connection))
            return False  # invalidCredentials, or a policy refusing the account
        except LDAPException as error:
            raise Unreachable(_exception_text(error)) from None
        finally:
            _unbind(connection)


class _ContextTls(ldap3.Tls):
    """ldap3's TLS settings, wrapping sockets with an ``ssl`` context that checks the
    certificate and the host name during the handshake. ldap3 checks the name afterwards
    with ``ssl.match_hostname``, deprecated since Python 3.7 (removed in 3.12), and leaves
    the wrapped socket open when that check fails."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=context.verify_mode)
        self.context = context

    def wrap_socket(self, connection: ldap3.Connection, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def _rdn_value(dn: str) -> str:
    try:
        return str(parse_dn(dn)[0][1])
    except (LDAPException, IndexError):
        return dn


def _why(connection: ldap3.Connection) -> str:
    result = connection.result or {}
    return str(result.get("description") or connection.last_error or "no answer")


def _exception_text(error: LDAPException) -> str:
    # ldap3's messages name the server and the socket error, never a password.
    return type(error).__name__ + (f": {error}" if str(error) else "")


def _unbind(connection: ldap3.Connection) -> None:
    try:
        connection.unbind()
    except LDAPException:
        pass
    finally:
        # ldap3 leaves the socket of a failed connect (or of a failed unbind) open.
        sock = getattr(connection, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
