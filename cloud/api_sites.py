"""Province-at-a-glance routes: sites (with their geometry when configured), latest band positions,
and a band's track read back from VictoriaMetrics. A guard gets their sites only."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam

from cloud.api_context import CloudContext, Ctx, User, errors, get_principal
from cloud.auth import OPEN, Principal

router = APIRouter(prefix="/api/v1", dependencies=[Depends(get_principal)], responses=errors(401, 403, 429))
TRACK_FIELDS = ("x", "y", "err_m")
# A node's band positions not refreshed for this long count as stale (the dashboard's STALE_S, the same).
STALE_S = 30.0
TimeParam = Annotated[float | None, Query(ge=0, allow_inf_nan=False)]


def _track(vm_url: str, band: int, since: float, until: float,
           sites: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Raw band samples from VictoriaMetrics' export API, joined by timestamp across x, y, err_m.
    ``sites``: only those sites' series (one selector each; site IDs are validated [A-Za-z0-9._-])."""
    base = f'__name__=~"band_({"|".join(TRACK_FIELDS)})",band="{band}"'
    selectors = [f"{{{base}}}"] if sites is None else [f'{{{base},site="{s}"}}' for s in sorted(sites)]
    if not selectors:
        return []
    params = {"match[]": selectors, "start": f"{since:.3f}", "end": f"{until:.3f}"}
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


def band_counts(ctx: CloudContext, now: float | None = None) -> dict[str, tuple[int, int]]:
    """Per site: (bands, of which stale). A band heard by several nodes counts once, and is stale only if no
    node that reports it is online and fresh (reported within :data:`STALE_S`)."""
    now = time.time() if now is None else now
    online = ({(r["site"], r["node"]) for r in ctx.ingest.liveness.snapshot() if r["online"]}
              if ctx.ingest is not None else None)
    seen: dict[str, set[int]] = {}
    fresh: dict[str, set[int]] = {}
    for key, pos in list(ctx.hub.positions.items()):
        ids = {b["band"] for b in pos.get("bands", []) if isinstance(b, dict) and "band" in b}
        seen.setdefault(key[0], set()).update(ids)
        live = (online is None or key in online) and now - ctx.hub.received.get(key, 0.0) <= STALE_S
        if live:
            fresh.setdefault(key[0], set()).update(ids)
    return {site: (len(ids), len(ids - fresh.get(site, set()))) for site, ids in seen.items()}


def site_summaries(ctx: CloudContext, who: Principal = OPEN) -> list[dict[str, Any]]:
    """Every site the cloud knows of (configured, alerted or heard from) that ``who`` may see, by ID."""
    sites: dict[str, dict[str, Any]] = {}

    def site(name: str) -> dict[str, Any]:
        return sites.setdefault(name, {"site": name, "open": 0, "unacknowledged": 0, "critical_open": 0,
                                       "escalated": 0, "last_alert_at": None, "nodes": [], "bands": 0,
                                       "bands_stale": 0, "nodes_online": 0, "geometry": None,
                                       "escalation_deliveries": None, "config_latest": None})

    for sid, geom in ctx.sites.items():
        site(sid)["geometry"] = geom.model_dump(mode="json")
    for row in ctx.store.site_summary():
        site(row["site"]).update({k: row[k] for k in row if k != "site"})
    for sid, by_state in ctx.store.delivery_counts().items():
        site(sid)["escalation_deliveries"] = by_state  # {"pending", "ok", "failed"}: failed ones need a look
    if ctx.ingest is not None:
        for rec in ctx.ingest.liveness.snapshot():
            health = ctx.ingest.node_health.get((rec["site"], rec["node"]))
            # The pushed config version the node reports in its telemetry (None: never pushed or not heard).
            version = health.get("config_version") if health else None
            entry = site(rec["site"])
            entry["nodes"].append({**rec, "health": health, "config_version": version})
            entry["nodes_online"] += bool(rec["online"])
    for sid, (n, stale) in band_counts(ctx).items():
        site(sid).update(bands=n, bands_stale=stale)
    if ctx.bands is not None:
        # The latest pushed config version: a node whose config_version is lower has not applied it yet.
        for sid, entry in sites.items():
            last = ctx.bands.last_push(sid)
            entry["config_latest"] = last[0] if last is not None else None
    return [sites[k] for k in sorted(sites) if who.sees(k)]


# What a province summary keeps of a site's summary: counts only (no geometry, no node health).
BRIEF_FIELDS = ("site", "bands", "bands_stale", "nodes_online", "open", "unacknowledged", "critical_open",
                "escalated", "last_alert_at")


def site_briefs(ctx: CloudContext, who: Principal = OPEN) -> list[dict[str, Any]]:
    """Per site ``who`` may see, only the counts a province overview draws (a few dozen bytes a site):
    bands and stale bands, nodes online of ``nodes``, alerts open / needing attention / critical / escalated."""
    out = []
    for s in site_summaries(ctx, who):
        brief = {k: s[k] for k in BRIEF_FIELDS}
        brief["nodes_total"] = len(s["nodes"])
        out.append(brief)
    return out


def scoped_positions(ctx: CloudContext, who: Principal) -> list[dict[str, Any]]:
    """The latest band positions per (site, node) of the sites ``who`` may see."""
    return [p for (s, _node), p in list(ctx.hub.positions.items()) if who.sees(s)]


@router.get("/sites")
def sites(ctx: Ctx, who: User) -> list[dict[str, Any]]:
    """The province at a glance; ``geometry`` is the site's zones/receivers/beacons or null."""
    return site_summaries(ctx, who)


@router.get("/positions")
def positions(ctx: Ctx, who: User) -> list[dict[str, Any]]:
    """The latest band positions per (site, node)."""
    return scoped_positions(ctx, who)


@router.get("/bands/{band}/track")
def band_track(
    ctx: Ctx,
    who: User,
    band: Annotated[int, PathParam(ge=1, le=0xFFFFFFFF)],
    since: TimeParam = None,
    until: TimeParam = None,
) -> dict[str, Any]:
    """A band's positions between ``since`` (default 10 min ago) and ``until`` (default now); a guard
    gets only the points recorded at their sites."""
    if ctx.vm_url is None:
        raise HTTPException(503, "no VictoriaMetrics configured")
    now = time.time()
    until_ = until if until is not None else now + 60
    since_ = since if since is not None else now - 600
    if since_ > until_:
        raise HTTPException(422, "since must not be after until")
    try:
        points = _track(ctx.vm_url, band, since_, until_, who.sites)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise HTTPException(503, f"time-series store unavailable: {exc}") from None
    return {"band": band, "since": since_, "until": until_, "points": points}
