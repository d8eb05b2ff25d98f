"""Alert routes: list, read, snapshot and acknowledge (docs/protocol.md §4/§5 plus the cloud lifecycle).

Every route needs an authenticated caller when the cloud runs with ``--users`` (cloud.auth); a guard
sees and acknowledges only the alerts of their sites (403 otherwise).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud.alert_store import AckError, AlertQuery, AlertStore, alert_view
from cloud.api_context import ID_RE, ULID_RE, Ctx, PersonParam, User, errors, get_principal, label_param
from cloud.auth import Principal
from cloud.csv_export import alerts_csv
from protocols.payloads import AlertType

log = logging.getLogger("qwatch.cloud.api")
router = APIRouter(prefix="/api/v1/alerts", dependencies=[Depends(get_principal)],
                   responses=errors(401, 403, 429))
AlertId = Annotated[str, PathParam(pattern=ULID_RE)]


class AckRequest(BaseModel):
    """A guard's acknowledgement. With auth on, the server records the signed-in user: ``person`` may be
    left out (or must name that user); with auth off it is required, as the only name there is."""

    model_config = ConfigDict(extra="forbid")
    person: str | None = Field(default=None, min_length=1, max_length=128)
    note: str = Field(default="", max_length=2000)

    @field_validator("person", "note")
    @classmethod
    def _encodable(cls, v: str | None) -> str | None:
        """A lone surrogate decodes from JSON but cannot be stored, logged or sent to the node as UTF-8."""
        if v is not None:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text must be valid Unicode (no lone surrogates)") from None
        return v


def scoped_alerts(store: AlertStore, who: Principal, q: AlertQuery) -> list[dict[str, Any]]:
    """``list_alerts`` limited to the caller's sites (one query per site, merged in the store's order)."""
    if who.sites is None:
        return store.list_alerts(q)
    if q.site is not None:
        who.require_site(q.site)
        return store.list_alerts(q)
    rows = [r for s in sorted(who.sites) for r in store.list_alerts(replace(q, site=s))]
    rows.sort(key=lambda r: (r["first_received"], r["alert_id"]), reverse=True)
    return rows[:q.limit]


def _scoped_row(ctx: Ctx, who: Principal, alert_id: str) -> dict[str, Any]:
    row = ctx.store.get(alert_id)
    if row is None:
        raise HTTPException(404, f"alert {alert_id} not found")
    who.require_site(row["site"])
    return row


TimeQ = Annotated[float | None, Query(ge=0, le=1e11, allow_inf_nan=False)]


def _filters(
    site: Annotated[str | None, Query(pattern=ID_RE)] = None,
    state: Literal["raised", "acknowledged", "cleared"] | None = None,
    type: AlertType | None = None,
    since: Annotated[float | None, Query(ge=0, le=1e11, allow_inf_nan=False,
                                         description="Unix s: alerts changed at or after (with until: a range)")
                     ] = None,
    until: Annotated[float | None, Query(ge=0, le=1e11, allow_inf_nan=False,
                                         description="Unix s: alerts raised at or before")] = None,
    person: PersonParam = None,
    unacknowledged: bool = False,
) -> AlertQuery:
    """The history filters shared by the list and the CSV export. ``since``+``until`` select every alert
    whose life overlaps the range (raised before ``until``, last changed after ``since``)."""
    if since is not None and until is not None and since > until:
        raise HTTPException(422, "since must not be after until")
    return AlertQuery(site=site, state=state, type=type, since=since, until=until, person=label_param(person),
                      unacknowledged=unacknowledged)


Filters = Annotated[AlertQuery, Depends(_filters)]


@router.get("", responses=errors(401, 403, 422))
def list_alerts(ctx: Ctx, who: User, q: Filters, limit: Annotated[int, Query(ge=1, le=5000)] = 200,
                ) -> list[dict[str, Any]]:
    """Alerts newest first, filtered (a guard: their sites only; 403 for another site); 422 on bad filters.
    Each has ``person``, ``ack_s`` (raise to acknowledgement), ``escalated_at`` and ``history``."""
    return [alert_view(r) for r in scoped_alerts(ctx.store, who, replace(q, limit=limit))]


@router.get(".csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "UTF-8 CSV with BOM"},
    **errors(401, 403, 422)})
def alerts_csv_export(ctx: Ctx, who: User, q: Filters, limit: Annotated[int, Query(ge=1, le=50000)] = 5000,
                      ) -> Response:
    """The same history as a spreadsheet (UTF-8 with BOM; times in the province's zone)."""
    views = [alert_view(r) for r in scoped_alerts(ctx.store, who, replace(q, limit=limit))]
    stamp = dt.datetime.now(ctx.tz).strftime("%Y%m%d-%H%M")
    return Response(alerts_csv(views, ctx.tz), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="qwatch-alerts-{stamp}.csv"'})


@router.get("/{alert_id}", responses=errors(401, 403, 404, 422))
def get_alert(ctx: Ctx, who: User, alert_id: AlertId) -> dict[str, Any]:
    """One alert with its lifecycle; 404 when unknown, 403 when out of the caller's scope."""
    return alert_view(_scoped_row(ctx, who, alert_id))


@router.get("/{alert_id}/snapshot", response_class=Response, responses={
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "JPEG"},
    **errors(404, 422)})
def get_snapshot(ctx: Ctx, who: User, alert_id: AlertId) -> Response:
    """The camera snapshot (JPEG) stored with an alert; 404 when there is none, 403 out of scope."""
    if who.sites is not None:
        _scoped_row(ctx, who, alert_id)  # a snapshot before its alert row has no known site yet: 404
    jpeg = ctx.store.snapshot(alert_id)
    if jpeg is None:
        raise HTTPException(404, f"no snapshot for alert {alert_id}")
    return Response(jpeg, media_type="image/jpeg")


@router.post("/{alert_id}/ack", responses=errors(404, 409, 422))
def ack_alert(ctx: Ctx, who: User, alert_id: AlertId, body: AckRequest) -> dict[str, Any]:
    """Acknowledge once (404 unknown, 403 out of scope, 409 twice) as the signed-in user; tell the node
    and the live dashboards."""
    by = _acker(who, body)
    _scoped_row(ctx, who, alert_id)
    try:
        row = ctx.store.acknowledge(alert_id, by=by, note=body.note)
    except AckError as exc:
        raise HTTPException(404 if exc.code == "not_found" else 409, str(exc)) from None
    view = alert_view(row)
    log.info("event=alert_acknowledged alert=%s by=%s role=%s site=%s", alert_id, by, who.role, row["site"])
    if ctx.ingest is not None:
        view["cmd_id"] = ctx.ingest.send_ack_command(row, by=by, note=body.note)
    ctx.hub.publish("alert", view)
    return view


def _acker(who: Principal, body: AckRequest) -> str:
    """The name an acknowledgement is recorded under: the server-side identity whenever there is one."""
    if who.name is None:
        if body.person is None:
            raise HTTPException(422, "person is required (the cloud runs without sign-in)")
        return body.person
    if body.person is not None and body.person != who.name:
        raise HTTPException(422, f"person {body.person!r} is not the signed-in user {who.name!r}; leave it out")
    return who.name
