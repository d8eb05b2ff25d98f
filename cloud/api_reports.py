"""``GET /api/v1/reports/daily``: the daily report (cloud.report) as JSON or CSV. A guard gets their sites
(and a province block summing only those); command and admin get every site the cloud knows of."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from cloud.api_context import ID_RE, CloudContext, Ctx, User, errors, get_principal
from cloud.auth import Principal
from cloud.report import collect, known_sites, report_csv

router = APIRouter(prefix="/api/v1/reports", dependencies=[Depends(get_principal)],
                   responses=errors(401, 403, 429))
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"


def parse_day(value: str) -> dt.date:
    """``YYYY-MM-DD`` as a date; 422 for a date that does not exist."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"date {value!r} is not a calendar date (YYYY-MM-DD)") from None
    if not 2000 <= day.year <= 2999:
        raise HTTPException(422, "date must be in the years 2000-2999")
    return day


def build(ctx: CloudContext, who: Principal, day: dt.date, site: str | None) -> dict[str, Any]:
    """The report of ``day`` for ``site`` (403 outside a guard's scope) or every site ``who`` sees."""
    if site is not None:
        who.require_site(site)
        sites = {site}
    else:
        sites = {s for s in known_sites(ctx.store, [*ctx.people, *ctx.sites]) if who.sees(s)}
    names = {sid: geom.name for sid, geom in ctx.sites.items()}
    return collect(ctx.store, day, ctx.tz, sites, people=ctx.people, names=names, now=time.time())


@router.get("/daily", response_model=None, responses={
    200: {"description": "the report (JSON; with format=csv, UTF-8 CSV with BOM)",
          "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}}},
    **errors(401, 403, 422)})
def daily(
    ctx: Ctx,
    who: User,
    date: Annotated[str, Query(pattern=DATE_RE, description="local day in the province's time zone")],
    site: Annotated[str | None, Query(pattern=ID_RE)] = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """People under watch, alerts by type and severity, breaches with mean and p95 time to acknowledge,
    escalations, node uptime and camera offline-minutes, per site and for the province."""
    report = build(ctx, who, parse_day(date), site)
    if format == "csv":
        name = f"qwatch-daily-{report['date']}{'-' + site if site else ''}.csv"
        return Response(report_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return JSONResponse(report)
