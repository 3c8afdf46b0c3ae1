"""What the interface keeps for the app's lifetime, and the typed keys to reach it."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from aiohttp import web

from registry.ui.rights import Rights
from registry.ui.session import Session, SessionCodec


@dataclass(frozen=True, slots=True)
class UiState:
    codec: SessionCodec
    rights: Rights
    templates: jinja2.Environment
    base: str  # the interface's path: http.prefix + "/ui"


UI = web.AppKey("ui", UiState)
SESSION = web.RequestKey("ui_session", Session)
