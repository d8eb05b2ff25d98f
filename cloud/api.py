"""The command centre's HTTP API and live WebSocket (FastAPI), plus the dashboard's static page.

Endpoints:
- ``GET /healthz``: store, ingest and time-series status; 503 when the store or the broker is down.
- ``GET /api/v1/alerts``: filters ``site``, ``state``, ``type``, ``since`` (Unix s, by last change),
  ``unacknowledged``, ``limit``; 422 on bad input. Newest first. Each item is the §4 alert plus its
  cloud lifecycle (``state`` may be ``acknowledged``; ``ack``, ``escalated``, ``raised_ts``…).
- ``GET /api/v1/alerts/{alert_id}`` and ``…/snapshot`` (JPEG).
- ``POST /api/v1/alerts/{alert_id}/ack`` with ``{"person": …, "note": …}``; 404 unknown, 409 twice.
  The acknowledgement is also sent to the node as ``…/cmd/ack`` (PROTOCOL.md §5).
- ``GET /api/v1/bands/{band}/track?since=&until=``: positions read back from VictoriaMetrics.
- ``GET /api/v1/sites``: the province at a glance; ``GET /api/v1/positions``: latest band positions.
- ``WS /api/v1/live``: ``{"kind": "hello"|"alert"|"bands"|"node"|"camera_event", "data": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from cloud.alert_store import AckError, AlertQuery, AlertStore, alert_view
from cloud.ingest import Ingest
from cloud.live import LiveHub
from cloud.timeseries import TelemetryWriter
from protocols.payloads import AlertType

log = logging.getLogger("qwatch.cloud.api")

STATIC_DIR = Path(__file__).parent / "static"
ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ULID_RE = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"
TRACK_FIELDS = ("x", "y", "err_m")
STALL_S = 30.0


@dataclass
class CloudContext:
    """Everything the API reads from. ``ingest``/``writer`` are None in an API-only process."""

    store: AlertStore
    hub: LiveHub
    ingest: Ingest | None = None
    writer: TelemetryWriter | None = None
    vm_url: str | None = None


class AckRequest(BaseModel):
    """A guard's acknowledgement."""

    model_config = ConfigDict(extra="forbid")
    person: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=2000)


def _health(ctx: CloudContext) -> tuple[bool, dict[str, Any]]:
    store_ok = ctx.store.ping()
    body: dict[str, Any] = {"store": {"ok": store_ok, "path": ctx.store.path}}
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
    body["ok"] = ok
    return ok, body


def _track(vm_url: str, band: int, since: float, until: float) -> list[dict[str, Any]]:
    """Raw band samples from VictoriaMetrics' export API, joined by timestamp across x, y, err_m."""
    params = {"match[]": f'{{__name__=~"band_({"|".join(TRACK_FIELDS)})",band="{band}"}}',
              "start": f"{since:.3f}", "end": f"{until:.3f}"}
    resp = httpx.get(f"{vm_url}/api/v1/export", params=params, timeout=5.0)
    resp.raise_for_status()
    points: dict[int, dict[str, Any]] = {}
    for line in resp.text.splitlines():
        if not line.strip():
            continue
        series = json.loads(line)
        labels = series["metric"]
        name = labels["__name__"].removeprefix("band_")
        for ts_ms, value in zip(series["timestamps"], series["values"], strict=False):
            p = points.setdefault(ts_ms, {"ts": ts_ms / 1000.0, "x": None, "y": None, "err_m": None,
                                          "zone": labels.get("zone"), "site": labels.get("site"),
                                          "node": labels.get("node")})
            p[name] = value
    return [points[k] for k in sorted(points)]


def _sites(ctx: CloudContext) -> list[dict[str, Any]]:
    sites: dict[str, dict[str, Any]] = {}

    def site(name: str) -> dict[str, Any]:
        return sites.setdefault(name, {"site": name, "open": 0, "unacknowledged": 0, "critical_open": 0,
                                       "escalated": 0, "last_alert_at": None, "nodes": [], "bands": 0})

    for row in ctx.store.site_summary():
        site(row["site"]).update({k: row[k] for k in row if k != "site"})
    if ctx.ingest is not None:
        for rec in ctx.ingest.liveness.snapshot():
            health = ctx.ingest.node_health.get((rec["site"], rec["node"]))
            site(rec["site"])["nodes"].append({**rec, "health": health})
    for (s, _node), pos in list(ctx.hub.positions.items()):
        site(s)["bands"] += len(pos.get("bands", []))
    return [sites[k] for k in sorted(sites)]


def create_app(ctx: CloudContext) -> FastAPI:
    """Build the FastAPI app over a running (or API-only) cloud context."""
    app = FastAPI(title="qwatch cloud", version="1")
    app.state.ctx = ctx

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok, body = _health(ctx)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/api/v1/alerts")
    def list_alerts(
        site: Annotated[str | None, Query(pattern=ID_RE)] = None,
        state: Literal["raised", "acknowledged", "cleared"] | None = None,
        type: AlertType | None = None,
        since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        unacknowledged: bool = False,
        limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    ) -> list[dict[str, Any]]:
        rows = ctx.store.list_alerts(AlertQuery(site=site, state=state, type=type, since=since,
                                                unacknowledged=unacknowledged, limit=limit))
        return [alert_view(r) for r in rows]

    @app.get("/api/v1/alerts/{alert_id}")
    def get_alert(alert_id: Annotated[str, PathParam(pattern=ULID_RE)]) -> dict[str, Any]:
        row = ctx.store.get(alert_id)
        if row is None:
            raise HTTPException(404, f"alert {alert_id} not found")
        return alert_view(row)

    @app.get("/api/v1/alerts/{alert_id}/snapshot")
    def get_snapshot(alert_id: Annotated[str, PathParam(pattern=ULID_RE)]) -> Response:
        jpeg = ctx.store.snapshot(alert_id)
        if jpeg is None:
            raise HTTPException(404, f"no snapshot for alert {alert_id}")
        return Response(jpeg, media_type="image/jpeg")

    @app.post("/api/v1/alerts/{alert_id}/ack")
    def ack_alert(alert_id: Annotated[str, PathParam(pattern=ULID_RE)], body: AckRequest) -> dict[str, Any]:
        try:
            row = ctx.store.acknowledge(alert_id, by=body.person, note=body.note)
        except AckError as exc:
            raise HTTPException(404 if exc.code == "not_found" else 409, str(exc)) from None
        view = alert_view(row)
        log.info("event=alert_acknowledged alert=%s by=%s site=%s", alert_id, body.person, row["site"])
        if ctx.ingest is not None:
            view["cmd_id"] = ctx.ingest.send_ack_command(row, by=body.person, note=body.note)
        ctx.hub.publish("alert", view)
        return view

    @app.get("/api/v1/bands/{band}/track")
    def band_track(
        band: Annotated[int, PathParam(ge=1, le=0xFFFFFFFF)],
        since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        until: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    ) -> dict[str, Any]:
        if ctx.vm_url is None:
            raise HTTPException(503, "no VictoriaMetrics configured")
        now = time.time()
        until_ = until if until is not None else now + 60
        since_ = since if since is not None else now - 600
        if since_ > until_:
            raise HTTPException(422, "since must not be after until")
        try:
            points = _track(ctx.vm_url, band, since_, until_)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise HTTPException(503, f"time-series store unavailable: {exc}") from None
        return {"band": band, "since": since_, "until": until_, "points": points}

    @app.get("/api/v1/sites")
    def sites() -> list[dict[str, Any]]:
        return _sites(ctx)

    @app.get("/api/v1/positions")
    def positions() -> list[dict[str, Any]]:
        return list(ctx.hub.positions.values())

    @app.websocket("/api/v1/live")
    async def live(ws: WebSocket) -> None:
        await _live(ws, ctx)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _live(ws: WebSocket, ctx: CloudContext) -> None:
    await ws.accept()
    sub = ctx.hub.subscribe()
    recv: asyncio.Task[Any] | None = None
    try:
        rows = await asyncio.to_thread(ctx.store.list_alerts, AlertQuery(limit=200))
        hello = {"alerts": [alert_view(r) for r in rows], "positions": list(ctx.hub.positions.values())}
        await ws.send_text(json.dumps({"kind": "hello", "data": hello, "sent_at": time.time()}))
        # Watch the receive side too, so a closed browser tab frees its queue at once.
        recv = asyncio.create_task(_until_closed(ws))
        while True:
            get = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({get, recv}, return_when=asyncio.FIRST_COMPLETED)
            if recv in done:
                get.cancel()
                return
            await ws.send_text(get.result())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        ctx.hub.unsubscribe(sub)
        if recv is not None:
            recv.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recv


async def _until_closed(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await ws.receive_text()
