"""Who may use the interface and what they may see and do, per auth mode.

The interface decides nothing itself: in token mode it asks the token server (the same
ACL the API's tokens come from), in htpasswd mode it checks the users file with the
registry's own controller (its rate limits included), and an open registry lets everyone
do everything, as its API does. A page asks once for all the scopes it needs and gets a
:class:`Grant`, the same object the API's auth middleware checks requests against.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp

from registry.auth.base import Grant
from registry.auth.htpasswd import HtpasswdAccessController
from registry.auth.token import TokenAccessController
from shared.credentials import VerifierBusy
from shared.ratelimit import Throttled
from shared.scope import MAX_SCOPES, Scope, format_scopes
from shared.token_errors import TokenError

CLIENT_ID = "portside-ui"
MAX_TOKEN_RESPONSE = 64 * 1024
TOKEN_SERVER_TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_REFRESH_TOKEN = 2560  # tokenauth's are under 1 KiB
MAX_CREDENTIAL_LENGTH = 1024  # a user name or password longer than this is refused unread


class LoginRefused(Exception):
    """A login that failed; ``message`` is shown to the user, ``status`` answers the form."""

    def __init__(self, message: str, status: int = 401, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.retry_after = message, status, retry_after


class SessionEnded(Exception):
    """The token server no longer honours the session (refresh token expired or revoked)."""


class Rights(Protocol):
    mode: str  # "open", "htpasswd" or "token"

    @property
    def needs_login(self) -> bool:
        """Whether anything at all is visible without a login."""
        ...

    async def login(self, user: str, password: str, remote: str | None) -> str:
        """Check a login; the refresh token to keep ("" for none). Raises LoginRefused."""
        ...

    async def grant(self, user: str, refresh_token: str, scopes: Sequence[Scope]) -> Grant:
        """What the session's user may do of ``scopes`` (raises SessionEnded)."""
        ...

    async def close(self) -> None: ...


class OpenRights:
    """No access control: everyone may do everything (as the API)."""

    mode = "open"
    needs_login = False

    async def login(self, user: str, password: str, remote: str | None) -> str:
        raise LoginRefused("this registry has no logins", status=404)

    async def grant(self, user: str, refresh_token: str, scopes: Sequence[Scope]) -> Grant:
        return Grant("", everything=True)

    async def close(self) -> None:
        """Nothing to release."""


class HtpasswdRights:
    """``auth: htpasswd``: a user in the file may do everything (as the API), others nothing."""

    mode = "htpasswd"
    needs_login = True

    def __init__(self, controller: HtpasswdAccessController) -> None:
        self.controller = controller

    async def login(self, user: str, password: str, remote: str | None) -> str:
        _check_lengths(user, password)
        admission = self.controller.limits.admission(user, remote)
        try:
            ok = await self.controller.users.authenticate(user, password, admission)
        except Throttled as error:
            raise LoginRefused(
                "too many failed logins; try again later", 429, str(error.retry_after)
            ) from None
        except VerifierBusy:
            raise LoginRefused(
                "too many logins being checked; try again shortly", 503, "1"
            ) from None
        if not ok:
            raise LoginRefused("wrong user name or password")
        return ""

    async def grant(self, user: str, refresh_token: str, scopes: Sequence[Scope]) -> Grant:
        return Grant(user, everything=True) if user else Grant("")

    async def close(self) -> None:
        """The controller belongs to the app, which closes it."""


class TokenRights:
    """``auth: token``: the token server's OAuth2 endpoint decides, with its ACL.

    The login is a password grant asking for a refresh token (kept in the encrypted
    session, never shown); each page redeems it for an access token naming the scopes it
    needs, whose ``access`` claim (verified as the API verifies any token) is the grant.
    Anonymous visitors get what the token server grants anonymous ``GET`` requests.
    """

    mode = "token"
    needs_login = False

    def __init__(self, controller: TokenAccessController, realm: str) -> None:
        self.controller = controller
        self.realm = realm
        self.service = controller.config.service
        self._client: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=TOKEN_SERVER_TIMEOUT)
        return self._client

    async def login(self, user: str, password: str, remote: str | None) -> str:
        _check_lengths(user, password)
        form = {
            "grant_type": "password",
            "client_id": CLIENT_ID,
            "service": self.service,
            "access_type": "offline",
            "username": user,
            "password": password,
        }
        # The client's address for tokenauth's per-address budget: it reads it only when
        # this registry is one of its http.trustedproxies; otherwise every interface login
        # counts against the registry's own address.
        forwarded = {"X-Forwarded-For": remote} if remote else {}
        status, body, headers = await self._post(form, headers=forwarded)
        if status == 429 or status == 503:
            raise LoginRefused(
                "too many failed logins; try again later"
                if status == 429
                else "the token server is busy; try again shortly",
                status,
                headers.get("Retry-After", "1"),
            )
        if status != 200:
            raise LoginRefused("wrong user name or password")
        refresh = body.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise LoginRefused("the token server issued no refresh token", 502)
        if len(refresh) > MAX_REFRESH_TOKEN:
            # Encrypted, it would outgrow the 4 KiB a browser keeps of a cookie.
            raise LoginRefused("the token server's refresh token is too long to keep", 502)
        return refresh

    async def grant(self, user: str, refresh_token: str, scopes: Sequence[Scope]) -> Grant:
        # The token server takes at most MAX_SCOPES scopes a request: ask in batches, at
        # the same time (a page asks for a few batches at most).
        chunks = [scopes[i : i + MAX_SCOPES] for i in range(0, len(scopes), MAX_SCOPES)]
        answers = await asyncio.gather(*(self._access(refresh_token, c) for c in chunks or [[]]))
        return Grant(user, tuple(scope for access in answers for scope in access))

    async def _access(self, refresh_token: str, scopes: Sequence[Scope]) -> list[Scope]:
        if refresh_token:
            form = {
                "grant_type": "refresh_token",
                "client_id": CLIENT_ID,
                "service": self.service,
                "refresh_token": refresh_token,
                "scope": format_scopes(scopes),
            }
            status, body, _ = await self._post(form)
        else:  # anonymous, as a docker client without credentials asks
            query = [("service", self.service), ("client_id", CLIENT_ID)]
            query += [("scope", str(scope)) for scope in scopes]
            status, body, _ = await self._request("GET", params=query)
        if status in (400, 401) and refresh_token:
            raise SessionEnded
        token = body.get("access_token") or body.get("token")
        if status != 200 or not isinstance(token, str):
            raise TokenServerFailed(f"the token server answered {status}")
        try:
            claims = self.controller.verify(token)
        except TokenError as error:
            raise TokenServerFailed(f"the token server's token does not verify: {error}") from None
        return list(claims.access)

    async def _post(
        self, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return await self._request("POST", data=form, headers=headers or {})

    async def _request(
        self, method: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            async with self._session().request(method, self.realm, **kwargs) as response:
                raw = await response.content.read(MAX_TOKEN_RESPONSE + 1)
                status, headers = response.status, dict(response.headers)
        except (TimeoutError, aiohttp.ClientError) as error:
            raise TokenServerFailed(f"the token server cannot be reached: {error}") from None
        if len(raw) > MAX_TOKEN_RESPONSE:
            raise TokenServerFailed("the token server's answer is too large")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        return status, body if isinstance(body, dict) else {}, headers

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class TokenServerFailed(Exception):
    """The token server could not be asked (down, or answering nonsense)."""


def _check_lengths(user: str, password: str) -> None:
    if not user or len(user) > MAX_CREDENTIAL_LENGTH or len(password) > MAX_CREDENTIAL_LENGTH:
        raise LoginRefused("wrong user name or password")
