"""The web interface (``ui.enabled``): server-rendered pages under ``/ui/`` to browse
repositories, tags, images and referrers and to delete, with the API's access rules.

``setup_ui`` adds its routes to the registry app; everything it serves (templates, one
stylesheet, one small script) ships in this package, so it works on an air-gapped
network. docs/ui.md describes it.
"""

from __future__ import annotations

import datetime
from importlib import resources

import jinja2
from aiohttp import web

from registry.auth.base import AccessController
from registry.auth.htpasswd import HtpasswdAccessController
from registry.auth.token import TokenAccessController
from registry.config import RegistryConfig
from registry.ui import actions, pages
from registry.ui.frame import page
from registry.ui.rights import HtpasswdRights, OpenRights, Rights, TokenRights
from registry.ui.security import secure
from registry.ui.session import SessionCodec
from registry.ui.state import UI, UiState
from registry.urls import path_prefix

_STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}


def setup_ui(
    app: web.Application, config: RegistryConfig, controller: AccessController | None
) -> None:
    """Add the interface to ``app`` when ``ui.enabled``; nothing otherwise."""
    if not config.ui.enabled:
        return
    base = path_prefix(config) + "/ui"
    secure_cookie = bool(config.http.tls.certificate or config.http.tls.letsencrypt.hosts)
    codec = SessionCodec(
        config.http.secret, int(config.ui.session.lifetime.total_seconds()), secure_cookie
    )
    rights = _rights(config, controller)
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("registry.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates.filters["timestamp"] = _timestamp
    app[UI] = UiState(codec, rights, templates, base)
    app.on_cleanup.append(lambda _: rights.close())
    name = r"{name:[a-z0-9][a-z0-9._/-]*}"
    routes = [
        web.get(base, _to_index),
        web.get(base + "/", page(pages.repositories)),
        web.get(base + "/login", page(actions.login_form)),
        web.post(base + "/login", page(actions.login)),
        web.post(base + "/logout", page(actions.logout)),
        web.get(f"{base}/r/{name}/-/tags", page(pages.tags)),
        web.get(base + "/r/" + name + "/-/manifests/{reference}", page(pages.manifest)),
        web.get(f"{base}/r/{name}/-/delete", page(actions.confirm_delete)),
        web.post(f"{base}/r/{name}/-/delete", page(actions.delete)),
        web.get(base + "/static/{file}", _static),
        web.get(base + "/{tail:.*}", page(_not_found)),  # last: anything else under /ui/
    ]
    app.router.add_routes(routes)


def _rights(config: RegistryConfig, controller: AccessController | None) -> Rights:
    if isinstance(controller, TokenAccessController):
        assert config.auth.token is not None
        return TokenRights(controller, config.ui.tokenrealm or config.auth.token.realm)
    if isinstance(controller, HtpasswdAccessController):
        return HtpasswdRights(controller)
    if controller is None:
        return OpenRights()
    raise ValueError("ui.enabled: the interface supports auth htpasswd, token, or none")


def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _to_index(request: web.Request) -> web.StreamResponse:
    return web.Response(status=308, headers={"Location": request.app[UI].base + "/"})


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound(reason="no such page")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    content_type = _STATIC.get(name)
    if content_type is None:
        return secure(web.Response(status=404, text="not found"))
    body = resources.files("registry.ui").joinpath("static", name).read_bytes()
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return secure(response, cacheable=True)
