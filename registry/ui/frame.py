"""What every interface handler shares: the session, rendering, errors as pages.

``page`` wraps each handler: it reads the session (making an anonymous one for a new
visitor), renders registry errors as HTML pages with their status (a browser is the
client here, not docker), ends a session the token server no longer honours, and puts the
security headers on every answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from registry.auth.base import Grant
from registry.keys import CONFIG
from registry.storage.errors import DriverError, StorageError
from registry.storage_errors import registry_error
from registry.ui.rights import SessionEnded, TokenServerFailed
from registry.ui.security import secure
from registry.ui.session import new_session
from registry.ui.state import SESSION, UI
from registry.urls import base_url
from shared.errors import RegistryError
from shared.scope import Scope

log = logging.getLogger("registry")

UiHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoginRequired(Exception):
    """Nothing of this page is visible without a login (htpasswd mode)."""


def page(handler: UiHandler) -> UiHandler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        ui = request.app[UI]
        original = ui.codec.read(request)
        request[SESSION] = original or new_session()
        response: web.StreamResponse
        try:
            response = await handler(request)
        except web.HTTPException as http:  # the router's and aiohttp's own refusals
            response = error_page(request, http.status, http.reason)
        except LoginRequired:
            response = redirect(request, "/login")
        except SessionEnded:
            request[SESSION] = new_session()
            response = redirect(request, "/login?ended=1")
        except TokenServerFailed as error:
            log.warning("ui: %s", error)
            response = error_page(request, 502, "the token server cannot be asked right now")
        except RegistryError as error:
            response = error_page(request, error.status, error.message)
        except (StorageError, DriverError) as error:
            mapped = registry_error(error)
            if mapped is None:
                raise  # the app's error middleware logs it and answers 500
            response = error_page(request, mapped.status, mapped.message)
        if request[SESSION] is not original:  # new visitor, login or logout
            https = base_url(request, request.app[CONFIG]).startswith("https://")
            ui.codec.write(response, request[SESSION], https=https)
        return secure(response)

    return wrapped


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    ui = request.app[UI]
    session = request[SESSION]
    body = ui.templates.get_template(template).render(
        base=ui.base,
        session=session,
        csrf=session.csrf,
        mode=ui.rights.mode,
        **context,
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(
        request, "error.html", status=status, status_code=status, message=message, title="Error"
    )


async def grant(request: web.Request, scopes: list[Scope]) -> Grant:
    """What the session's user may do of ``scopes``, decided by the auth mode's rights."""
    session = request[SESSION]
    return await request.app[UI].rights.grant(session.user, session.refresh_token, scopes)


def redirect(request: web.Request, path: str) -> web.Response:
    """303 to ``path`` under the interface (a POST answered: the browser then GETs it)."""
    return web.Response(status=303, headers={"Location": request.app[UI].base + path})
