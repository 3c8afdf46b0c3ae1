"""The interface's session: an encrypted, authenticated cookie, and its CSRF token.

The cookie holds who logged in, how (the auth mode), a random CSRF token and, in token
mode, the token server's refresh token: Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``) encrypts and signs it, so the browser can neither read the refresh
token nor change a field, and its timestamp bounds the session's life
(``ui.session.lifetime``), checked on every request. The key is derived from
``http.secret`` (HKDF, a purpose of its own), so every instance sharing the secret reads
every session; without a secret it is drawn at start-up (shared by the ``--workers`` of
one registry) and sessions end on a restart.

Every visitor gets a session, anonymous until a login, so that even the login form carries
a CSRF token. The token is a synchronizer token: rendered into each form, compared with the
session's in constant time on every POST.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "portside_ui"
MAX_COOKIE_LENGTH = 4096  # what browsers keep of one cookie; anything longer is forged
_PURPOSE = b"portside ui session v1"
# Without http.secret: drawn once, when the registry starts, before it forks its workers,
# so that every worker (and each one that replaces a dead one) reads every session.
_UNCONFIGURED_SECRET = secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class Session:
    user: str  # "" before a login (and in open mode)
    csrf: str
    refresh_token: str = ""  # token mode only; never rendered

    @property
    def logged_in(self) -> bool:
        return bool(self.user)


def new_session(user: str = "", refresh_token: str = "") -> Session:
    """A fresh session, with a new CSRF token (a login never keeps the old one)."""
    return Session(user, secrets.token_urlsafe(32), refresh_token)


class SessionCodec:
    def __init__(self, secret: str, lifetime_seconds: int, secure: bool) -> None:
        material = secret.encode() if secret else _UNCONFIGURED_SECRET
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(material)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self.lifetime = lifetime_seconds
        self.secure = secure

    def read(self, request: web.Request) -> Session | None:
        """The request's session; None when it has none, or one that is forged or expired."""
        raw = request.cookies.get(COOKIE)
        if not raw or len(raw) > MAX_COOKIE_LENGTH:
            return None
        try:
            data = json.loads(self._fernet.decrypt(raw, ttl=self.lifetime))
            session = Session(str(data["u"]), str(data["c"]), str(data.get("r", "")))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return session if session.csrf else None

    def write(self, response: web.StreamResponse, session: Session, *, https: bool) -> None:
        """Set the cookie; Secure when TLS is configured or the client used https (a
        proxy's X-Forwarded-Proto says so)."""
        data = {"u": session.user, "c": session.csrf}
        if session.refresh_token:
            data["r"] = session.refresh_token
        value = self._fernet.encrypt(json.dumps(data).encode()).decode()
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.lifetime,
            path="/",
            secure=self.secure or https,
            httponly=True,
            samesite="Strict",
        )

    def clear(self, response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path="/", secure=self.secure, httponly=True, samesite="Strict")


def csrf_matches(session: Session, submitted: str | None) -> bool:
    """Whether a form's CSRF token is the session's (constant time)."""
    if not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())
