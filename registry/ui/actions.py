"""The interface's state-changing actions: log in, log out, delete a tag or manifest.

Every POST must carry the session's CSRF token (checked in constant time) before anything
else is looked at. Deleting asks the auth mode's rights for ``delete`` on the repository,
as the API's auth middleware does for ``DELETE``, and then runs the API's own deletion
code; a refusal is a 403 page whatever the form held.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web

from registry.handlers.base import reference_param
from registry.handlers.manifests import delete_reference
from registry.keys import STORAGE
from registry.notifications.events import ACTOR
from registry.ui.frame import grant, redirect, render
from registry.ui.rights import LoginRefused
from registry.ui.session import csrf_matches, new_session
from registry.ui.state import SESSION, UI
from shared import errors
from shared.client_address import client_address
from shared.errors import RegistryError
from shared.reference import is_valid_name
from shared.scope import Scope

log = logging.getLogger("registry")

MAX_FORM = 16 * 1024  # a login or delete form is a few hundred bytes


async def login_form(request: web.Request) -> web.StreamResponse:
    if request.app[UI].rights.mode == "open":
        return redirect(request, "/")
    ended = request.query.get("ended") == "1"
    return render(
        request,
        "login.html",
        title="Log in",
        message="Your session has ended; log in again." if ended else "",
    )


async def login(request: web.Request) -> web.StreamResponse:
    form = await _checked_form(request)
    rights = request.app[UI].rights
    user = form.get("username", "")
    try:
        refresh = await rights.login(user, form.get("password", ""), client_address(request))
    except LoginRefused as refused:
        response = render(
            request, "login.html", status=refused.status, title="Log in", message=refused.message
        )
        if refused.retry_after:
            response.headers["Retry-After"] = refused.retry_after
        return response
    # A new session (and CSRF token) at login: nothing set before it carries over.
    request[SESSION] = new_session(user, refresh)
    log.info("ui: %s logged in from %s", user, client_address(request))
    return redirect(request, "/")


async def logout(request: web.Request) -> web.StreamResponse:
    await _checked_form(request)
    request[SESSION] = new_session()
    return redirect(request, "/login" if request.app[UI].rights.mode != "open" else "/")


async def confirm_delete(request: web.Request) -> web.StreamResponse:
    name, reference = await _deletable(request, request.query.get("reference", ""))
    return render(
        request, "delete.html", repo=name, reference=reference, title=f"Delete {reference}?"
    )


async def delete(request: web.Request) -> web.StreamResponse:
    form = await _checked_form(request)
    name, reference = await _deletable(request, form.get("reference", ""))
    session = request[SESSION]
    request[ACTOR] = session.user  # the deletion's events name who did it
    await delete_reference(request, request.app[STORAGE].repository(name), reference)
    log.info("ui: %s deleted %s:%s", session.user or "anonymous", name, reference[:80])
    return redirect(request, f"/r/{name}/-/tags?" + urlencode({"deleted": reference}))


async def _deletable(request: web.Request, reference: str) -> tuple[str, str]:
    """The repository and reference to delete, once the user's delete right is granted."""
    name = request.match_info["name"]
    if not is_valid_name(name):
        raise RegistryError(errors.NAME_INVALID, "invalid repository name")
    if not reference or len(reference) > 200:
        raise RegistryError(errors.MANIFEST_UNKNOWN, "no such tag or manifest")
    reference_param(reference)  # the API's grammar: a malformed one is refused up front
    scope = Scope.of("repository", name, ["delete"])
    if not (await grant(request, [scope])).allows(scope):
        raise RegistryError(errors.DENIED, "you may not delete in this repository", status=403)
    return name, reference


async def _checked_form(request: web.Request) -> dict[str, str]:
    """The form's text fields, once its CSRF token matched the session's (403 otherwise)."""
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise RegistryError(errors.SIZE_TOO_LARGE, "form too large", status=413)
    try:
        posted = await request.post()
    except (ValueError, LookupError):
        raise RegistryError(errors.UNSUPPORTED, "malformed form", status=400) from None
    form = {k: v for k, v in posted.items() if isinstance(v, str)}
    if not csrf_matches(request[SESSION], form.get("csrf")):
        raise RegistryError(errors.DENIED, "the form has expired; reload the page", status=403)
    return form
