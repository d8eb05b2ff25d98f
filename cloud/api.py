"""The command centre's HTTP API and live WebSocket (FastAPI), plus the dashboard's static page.

Endpoints (routes live in one module per concern):
- ``GET /healthz``: store, ingest and time-series status; 503 when the store or the broker is down.
- ``cloud.api_alerts``: ``GET /api/v1/alerts`` (filters ``site``, ``state``, ``type``, ``since`` (Unix s,
  by last change), ``until`` (Unix s, raised at or before), ``person`` (part of the label),
  ``unacknowledged``, ``limit``; 422 on bad input; newest first; each item is the §4 alert plus its cloud
  lifecycle: ``person``, ``ack_s``, ``escalated_at``, ``history``), ``GET /api/v1/alerts.csv`` (the same
  filters, UTF-8 CSV with BOM), ``GET /api/v1/alerts/{alert_id}`` and ``…/snapshot`` (JPEG),
  ``POST /api/v1/alerts/{alert_id}/ack`` with ``{"note": …}`` recorded under the signed-in user (without
  ``--users``: ``{"person": …, "note": …}``) (404 unknown, 409 twice; also sent to the node as
  ``…/cmd/ack``, docs/protocol.md §5).
- ``cloud.api_sites``: ``GET /api/v1/sites`` (the province at a glance, with each configured site's
  zones/receivers/beacons as ``geometry``), ``GET /api/v1/positions`` (latest band positions),
  ``GET /api/v1/bands/{band}/track?since=&until=`` (positions read back from VictoriaMetrics).
- ``cloud.api_live``: ``WS /api/v1/live[?watch=*|auto|SITE,…]``: ``{"kind": "hello"|"alert"|"escalation"|"bands"|
  "positions"|"node"|"camera_event", "data": …}``; the client's ``{"op": "watch", "sites": …}`` picks whose band
  positions it gets (docs/cloud.md, "The live feed at province scale").
- ``cloud.api_reports``: ``GET /api/v1/reports/daily?date=YYYY-MM-DD[&site=][&format=csv]`` (cloud.report).
- ``cloud.api_auth``: ``POST /api/v1/auth/codes`` (admin: a one-time code for a user),
  ``POST /api/v1/auth/exchange`` (code → session token), ``POST /api/v1/auth/renew`` (cloud.signin).
- ``cloud.api_bands``: the band registry: ``GET/POST /api/v1/bands``, ``GET/PATCH /api/v1/bands/{band}``,
  ``POST …/{band}/retire``, ``GET …/{band}/audit`` (writes: admins; keys go in, never out), and
  ``POST /api/v1/sites/{site}/config/push`` (the config push of cloud.config_push).
- ``GET /api/v1/me``: who is signed in (``{"auth": "on"|"off", "name", "role", "sites"}``).

Access control (``cloud.auth``, docs/cloud.md "Access control"): with a users file every ``/api/v1``
route and the WebSocket need a bearer token (401 ``{"error": "unauthorized", "detail"}`` otherwise), and
a guard gets 403 ``{"error": "forbidden", …}`` outside their sites. ``/healthz``, ``/`` and ``/static``
stay open: they hold no personal data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from cloud import api_alerts, api_auth, api_bands, api_errors, api_live, api_reports, api_sites
from cloud.api_context import CloudContext, Ctx, User, errors
from cloud.auth import AuthError
from cloud.signin import RateLimited

__all__ = ["CloudContext", "create_app"]

log = logging.getLogger("qwatch.cloud.api")
STATIC_DIR = Path(__file__).parent / "static"
STALL_S = 30.0


def _health(ctx: CloudContext) -> tuple[bool, dict[str, Any]]:
    store_ok = ctx.store.ping()
    # No database path here: /healthz is open to anyone, and a path tells an attacker about the host.
    body: dict[str, Any] = {"store": {"ok": store_ok}}
    ok = store_ok
    if store_ok:
        body["store"]["alerts"] = ctx.store.counts()
    stalled: list[str] = []
    if ctx.ingest is not None:
        stats = body["ingest"] = ctx.ingest.stats()
        ok = ok and ctx.ingest.connected
        stalled += [k for k in ("tick_age_s", "store_loop_age_s") if stats[k] > STALL_S]
    if ctx.writer is not None:
        ts_stats = body["timeseries"] = ctx.writer.stats()
        if float(ts_stats["loop_age_s"] or 0) > STALL_S:
            stalled.append("timeseries.loop_age_s")
    # Watchdogs: a loop that has not come round for STALL_S is reported and fails the check.
    body["stalled"] = stalled
    ok = ok and not stalled
    body["live_subscribers"] = ctx.hub.subscribers
    if ctx.notifier is not None and store_ok:
        # Delivery failures are shown, not fatal: the dashboard and MQTT still carry the escalation.
        body["notify"] = ctx.notifier.stats()
    # Whether the API is open matters to monitoring; an unreadable users file is named, never its users.
    body["auth"] = "off" if ctx.auth is None else "on"
    if ctx.auth is not None and ctx.auth.file_error:
        body["auth_file_error"] = True
    body["ok"] = ok
    return ok, body


def healthz(ctx: Ctx) -> JSONResponse:
    """200 with the status body when healthy, 503 with the same body when not."""
    ok, body = _health(ctx)
    return JSONResponse(body, status_code=200 if ok else 503)


def me(who: User) -> dict[str, object]:
    """The signed-in caller (the dashboard's sign-in check); ``auth: off`` when the API is open."""
    return who.public()


def auth_error(request: Request, exc: Exception) -> JSONResponse:
    """401/403 as ``{"error", "detail"}``; a 401 names the scheme (RFC 6750)."""
    assert isinstance(exc, AuthError)
    if exc.status == 403:  # a 401 is logged by cloud.auth (with the reason); a guard reaching out of scope here
        log.warning("event=forbidden path=%s detail=%s", request.url.path, exc.message)
    headers = {"WWW-Authenticate": 'Bearer realm="qwatch"'} if exc.status == 401 else None
    return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=exc.status, headers=headers)


def rate_limited(request: Request, exc: Exception) -> JSONResponse:
    """429 with ``Retry-After`` (seconds) after too many failed sign-ins from one client."""
    assert isinstance(exc, RateLimited)
    log.warning("event=rate_limited path=%s client=%s retry_after_s=%d", request.url.path,
                request.client.host if request.client else "-", exc.retry_after)
    return JSONResponse({"error": "rate_limited", "detail": str(exc)}, status_code=429,
                        headers={"Retry-After": str(exc.retry_after)})


def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "index.html")


def favicon() -> FileResponse:
    """The bundled icon at the path browsers ask for by themselves (no 404 in every log)."""
    return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})


def create_app(ctx: CloudContext) -> FastAPI:
    """Build the FastAPI app over a running (or API-only) cloud context."""
    app = FastAPI(title="qwatch cloud", version="1", responses=api_errors.ERROR_RESPONSES)
    app.state.ctx = ctx
    api_errors.install(app)
    app.add_exception_handler(AuthError, auth_error)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/api/v1/me", me, methods=["GET"], responses=errors(401, 429))
    app.include_router(api_alerts.router)
    app.include_router(api_sites.router)
    app.include_router(api_bands.router)
    app.include_router(api_bands.push_router)
    app.include_router(api_live.router)
    app.include_router(api_reports.router)
    app.include_router(api_auth.router)
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)  # the dashboard page, not API
    app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The dashboard on a phone over a busy site Wi-Fi: its scripts and JSON shrink about 3x (docs/benchmarks.md).
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    return app
