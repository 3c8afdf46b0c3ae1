"""The headers every interface response carries, and the wrapper that applies them.

The policy allows scripts, styles and images from the registry itself only, no inline
script or style, no framing, no forms posting elsewhere; pages are never cached (they
show what a user may see) and never sent as a referrer.
"""

from __future__ import annotations

from aiohttp import web

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def secure(response: web.StreamResponse, *, cacheable: bool = False) -> web.StreamResponse:
    for name, value in HEADERS.items():
        response.headers[name] = value
    if not cacheable:
        response.headers["Cache-Control"] = "no-store"
    return response
