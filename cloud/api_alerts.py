"""Alert routes: list, read, snapshot and acknowledge (PROTOCOL.md §4/§5 plus the cloud lifecycle)."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.alert_store import AckError, AlertQuery, alert_view
from cloud.api_context import ID_RE, ULID_RE, Ctx
from protocols.payloads import AlertType

log = logging.getLogger("qwatch.cloud.api")
router = APIRouter(prefix="/api/v1/alerts")
AlertId = Annotated[str, PathParam(pattern=ULID_RE)]


class AckRequest(BaseModel):
    """A guard's acknowledgement."""

    model_config = ConfigDict(extra="forbid")
    person: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=2000)


@router.get("")
def list_alerts(
    ctx: Ctx,
    site: Annotated[str | None, Query(pattern=ID_RE)] = None,
    state: Literal["raised", "acknowledged", "cleared"] | None = None,
    type: AlertType | None = None,
    since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    unacknowledged: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    """Alerts newest first, filtered; 422 on bad filters."""
    rows = ctx.store.list_alerts(AlertQuery(site=site, state=state, type=type, since=since,
                                            unacknowledged=unacknowledged, limit=limit))
    return [alert_view(r) for r in rows]


@router.get("/{alert_id}")
def get_alert(ctx: Ctx, alert_id: AlertId) -> dict[str, Any]:
    """One alert with its lifecycle; 404 when unknown."""
    row = ctx.store.get(alert_id)
    if row is None:
        raise HTTPException(404, f"alert {alert_id} not found")
    return alert_view(row)


@router.get("/{alert_id}/snapshot")
def get_snapshot(ctx: Ctx, alert_id: AlertId) -> Response:
    """The camera snapshot (JPEG) stored with an alert; 404 when there is none."""
    jpeg = ctx.store.snapshot(alert_id)
    if jpeg is None:
        raise HTTPException(404, f"no snapshot for alert {alert_id}")
    return Response(jpeg, media_type="image/jpeg")


@router.post("/{alert_id}/ack")
def ack_alert(ctx: Ctx, alert_id: AlertId, body: AckRequest) -> dict[str, Any]:
    """Acknowledge once (404 unknown, 409 twice); tell the node and the live dashboards."""
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
