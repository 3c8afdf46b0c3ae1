"""The aiohttp side of health: the monitor's lifetime in the registry app, the API gate,
and the debug listener's routes.

- ``GET /debug/health`` (readiness, Distribution's): ``200 {}`` when every check passes,
  ``503 {"check": "error", ...}`` naming each failing check.
- ``GET /debug/health/live`` (liveness): ``200 {}`` whenever the process answers at all;
  it runs no check, so a failing dependency never gets a healthy process restarted.
- The gate: as Distribution's ``health.Handler``, while a Distribution-style check fails
  (storage driver, file, HTTP, TCP) every API request answers ``503 UNAVAILABLE``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.health.factory import create_checks
from registry.health.monitor import HealthMonitor
from registry.keys import CONFIG, HEALTH, STORAGE
from registry.middleware import render_error
from shared import errors
from shared.errors import RegistryError

HEALTH_PATH = "/debug/health"
LIVE_PATH = "/debug/health/live"
GATE_DETAIL = "health check failed: please see /debug/health"


async def health_context(app: web.Application) -> AsyncIterator[None]:
    """Poll the configured checks while the app serves (after storage is opened)."""
    monitor = HealthMonitor(create_checks(app[CONFIG], app[STORAGE]))
    app[HEALTH] = monitor
    monitor.start()
    yield
    await monitor.stop()


@web.middleware
async def health_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    monitor = request.app.get(HEALTH)
    if monitor is not None and monitor.failures(gating_only=True):
        return render_error(RegistryError(errors.UNAVAILABLE, detail=GATE_DETAIL))
    return await handler(request)


def _json(status: int, body: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def add_health_routes(debug_app: web.Application, served: web.AppKey[web.Application]) -> None:
    """Add the health routes to the debug app, reporting on the app under ``served``."""

    async def readiness(request: web.Request) -> web.Response:
        if request.method != "GET":  # as Distribution's StatusHandler
            raise web.HTTPNotFound()
        monitor = request.app[served].get(HEALTH)
        failing = monitor.failures() if monitor is not None else {}
        return _json(503 if failing else 200, failing)

    async def liveness(request: web.Request) -> web.Response:
        if request.method != "GET":
            raise web.HTTPNotFound()
        return _json(200, {})

    debug_app.router.add_route("*", HEALTH_PATH, readiness)
    debug_app.router.add_route("*", LIVE_PATH, liveness)
