"""Authentication towards an upstream registry: Basic, or Bearer by following the
upstream's ``WWW-Authenticate`` challenge to its token realm (Docker's token protocol),
with the upstream's credentials or anonymously.

Tokens are cached per scope until shortly before they expire, so a busy mirror asks the
upstream's token server once per repository and token lifetime, not once per request.
Nothing here logs a credential or a token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp

# auth-param = token BWS "=" BWS ( token / quoted-string ), RFC 9110 §11.2.
_PARAM = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')
# Docker's default when a token answer gives no expires_in (distribution's auth client).
DEFAULT_TOKEN_LIFETIME = 60.0
# A token is renewed this long before it expires, so it is never sent as it runs out.
EXPIRY_MARGIN = 10.0
MAX_TOKEN_ANSWER = 64 * 1024
MAX_CACHED_TOKENS = 1024


class UpstreamAuthError(Exception):
    """The upstream's token server refused or could not be asked (no secret inside)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` value; None when unreadable."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        found = _PARAM.match(rest, position)
        if found is None or found.end() == position:
            break
        value = found.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[found.group(1).lower()] = value
        position = found.end()
    return Challenge(scheme.lower(), params)


class UpstreamAuth:
    """Credentials for one upstream and the Bearer tokens obtained with them."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        username: str,
        password: str,
        *,
        https_only: bool = False,
    ) -> None:
        self._session = session
        self._https_only = https_only
        self._username = username
        self._password = password
        self._tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[str]] = {}

    def basic_header(self) -> str | None:
        if not self._username:
            return None
        pair = f"{self._username}:{self._password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def cached(self, scope: str) -> str | None:
        """An ``Authorization`` value for ``scope`` already at hand, if any."""
        entry = self._tokens.get(scope)
        if entry is None:
            return self.basic_header()
        token, expires = entry
        if time.monotonic() >= expires:
            del self._tokens[scope]
            return self.basic_header()
        return "Bearer " + token

    async def answer(self, challenge: Challenge, scope: str) -> str | None:
        """The ``Authorization`` value answering ``challenge`` for ``scope``; None when
        the challenge is one this client cannot answer."""
        if challenge.scheme == "basic":
            return self.basic_header()
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return None
        # One token request per scope at a time: concurrent misses share its answer.
        pending = self._pending.get(scope)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_token(challenge, scope))
            self._pending[scope] = pending
            pending.add_done_callback(lambda _: self._pending.pop(scope, None))
        return "Bearer " + await asyncio.shield(pending)

    async def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.params["realm"]
        if self._username and not realm.startswith("https://") and self._https_only:
            # An https upstream never gets its credentials sent in clear to a realm.
            raise UpstreamAuthError("the upstream's token realm is not https")
        query = {"scope": scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {}
        basic = self.basic_header()
        if basic is not None:
            headers["Authorization"] = basic
        try:
            async with self._session.get(realm, params=query, headers=headers) as response:
                if response.status != 200:
                    raise UpstreamAuthError(f"token server answered {response.status}")
                body = await response.content.read(MAX_TOKEN_ANSWER + 1)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise UpstreamAuthError(f"token server unreachable: {type(error).__name__}") from None
        token, lifetime = _token_from(body)
        self._tokens[scope] = (token, time.monotonic() + max(lifetime - EXPIRY_MARGIN, 1.0))
        self._tokens.move_to_end(scope)
        while len(self._tokens) > MAX_CACHED_TOKENS:
            self._tokens.popitem(last=False)
        return token


def _token_from(body: bytes) -> tuple[str, float]:
    if len(body) > MAX_TOKEN_ANSWER:
        raise UpstreamAuthError("token answer too large")
    try:
        answer = json.loads(body)
    except ValueError:
        raise UpstreamAuthError("token answer is not JSON") from None
    if not isinstance(answer, dict):
        raise UpstreamAuthError("token answer is not an object")
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise UpstreamAuthError("token answer holds no token")
    lifetime = answer.get("expires_in")
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return token, float(lifetime)
