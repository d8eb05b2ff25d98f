"""Band registry routes (cloud.band_registry): enrol, update, retire, list, audit.

Writing needs an admin (or the API open, without ``--users``); reading follows the site scope
(a guard sees their sites' bands). A band's key goes IN with an enrolment and never comes out:
no response model has a key field.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from cloud.api_context import ID_RE, CloudContext, Ctx, User, get_principal
from cloud.auth import Principal
from cloud.band_registry import BandRecord, BandRegistry, RegistryError

log = logging.getLogger("qwatch.cloud.api")
router = APIRouter(prefix="/api/v1/bands", dependencies=[Depends(get_principal)], tags=["bands"])
push_router = APIRouter(prefix="/api/v1/sites", dependencies=[Depends(get_principal)], tags=["bands"])
BandId = Annotated[int, PathParam(ge=1, le=0xFFFFFFFF)]
ZoneId = Annotated[str, Field(pattern=ID_RE)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or bad bearer token"},
    403: {"description": "not an admin, or the site is out of the caller's scope"},
    404: {"description": "unknown band"},
    409: {"description": "the band is active elsewhere, already enrolled (no rekey) or already retired; "
                        "a push: nothing pushed yet, no node known, or no broker connection now"},
    422: {"description": "invalid body or parameters"},
    503: {"description": "the cloud runs without a band registry"},
}


class EnrolRequest(BaseModel):
    """Register a band (the dock programmed it with `key`)."""

    model_config = ConfigDict(extra="forbid")
    band: int = Field(ge=1, le=0xFFFFFFFF)
    site: str = Field(pattern=ID_RE)
    person: str = Field(default="", max_length=64, description="person reference (never a name)")
    allowed_zones: list[ZoneId] = Field(min_length=1, max_length=64)
    key: str = Field(pattern=r"^[0-9a-fA-F]{32}$", description="the band's AES-128 key, hex (write-only)")
    rekey: bool = Field(default=False, description="replace the key of a band already enrolled at this site")


class UpdateRequest(BaseModel):
    """Change an active band's person label or zones."""

    model_config = ConfigDict(extra="forbid")
    person: str | None = Field(default=None, max_length=64)
    allowed_zones: list[ZoneId] | None = Field(default=None, min_length=1, max_length=64)


def _registry(ctx: CloudContext) -> BandRegistry:
    if ctx.bands is None:
        raise HTTPException(503, "this cloud runs without a band registry")
    return ctx.bands


def _admin(who: Principal) -> str:
    if who.role not in ("admin", "open"):
        raise HTTPException(403, f"user {who.name!r} ({who.role}) may not change the band registry; ask an admin")
    return who.name or "api"


def _raise(exc: RegistryError) -> HTTPException:
    return HTTPException({"not_found": 404, "conflict": 409}.get(exc.code, 422), str(exc))


@router.get("", responses=ERRORS)
def list_bands(ctx: Ctx, who: User, site: Annotated[str | None, Query(pattern=ID_RE)] = None,
               active: bool = False) -> list[BandRecord]:
    """Bands by ID (a guard: their sites only)."""
    if site is not None:
        who.require_site(site)
    return [b for b in _registry(ctx).bands(site, include_retired=not active) if who.sees(b.site)]


@router.post("", status_code=201, responses=ERRORS)
def enrol_band(ctx: Ctx, who: User, body: EnrolRequest) -> BandRecord:
    """Enrol (or re-key with ``rekey``) a band at a site. Admins only."""
    by = _admin(who)
    try:
        rec = _registry(ctx).enrol(band=body.band, site=body.site, person=body.person,
                                   allowed_zones=body.allowed_zones, key=bytes.fromhex(body.key), by=by,
                                   rekey=body.rekey)
    except RegistryError as exc:
        raise _raise(exc) from None
    log.info("event=band_enrolled band=%d site=%s by=%s", rec.band, rec.site, by)
    return rec


@router.get("/{band}", responses=ERRORS)
def get_band(ctx: Ctx, who: User, band: BandId) -> BandRecord:
    """One band, active or retired."""
    rec = _registry(ctx).get(band)
    if rec is None:
        raise HTTPException(404, f"band {band} is not in the registry")
    who.require_site(rec.site)
    return rec


@router.patch("/{band}", responses=ERRORS)
def update_band(ctx: Ctx, who: User, band: BandId, body: UpdateRequest) -> BandRecord:
    """Change the person label or the allowed zones. Admins only."""
    by = _admin(who)
    try:
        rec = _registry(ctx).update(band, by=by, person=body.person, allowed_zones=body.allowed_zones)
    except RegistryError as exc:
        raise _raise(exc) from None
    return rec


@router.post("/{band}/retire", responses=ERRORS)
def retire_band(ctx: Ctx, who: User, band: BandId) -> BandRecord:
    """End the band's enrolment; its key is deleted and it leaves the next config push. Admins only."""
    by = _admin(who)
    try:
        rec = _registry(ctx).retire(band, by=by)
    except RegistryError as exc:
        raise _raise(exc) from None
    log.info("event=band_retired band=%d site=%s by=%s", band, rec.site, by)
    return rec


@router.get("/{band}/audit", responses=ERRORS)
def band_audit(ctx: Ctx, who: User, band: BandId) -> list[dict[str, Any]]:
    """Who changed what on this band, newest first. Admins and the command centre."""
    if who.role == "guard":
        raise HTTPException(403, "guards cannot read the audit")
    return _registry(ctx).audit(band)



class PushRequest(BaseModel):
    """A config push: the site YAML (default: the site's last pushed one)."""

    model_config = ConfigDict(extra="forbid")
    site_yaml: str | None = Field(default=None, min_length=1, max_length=1_000_000)


class PushOut(BaseModel):
    """What was sent: the version and the nodes it went to (their answers arrive as cmd_result and
    their running version in ``GET /api/v1/sites`` → ``nodes[].config_version``)."""

    model_config = ConfigDict(extra="forbid")
    site: str
    version: int
    bands: int
    nodes: list[str]
    notes: list[str]


@push_router.post("/{site}/config/push", responses=ERRORS)
def push_config(ctx: Ctx, who: User, site: Annotated[str, PathParam(pattern=ID_RE)],
                body: PushRequest | None = None) -> PushOut:
    """Send the site's config with its registry bands and keys to the site's nodes (retained QoS 1).
    Admins only; the same as ``qwatch-cloud config push`` without waiting for the answers."""
    from cloud.config_push import compose, publish_config
    from protocols.errors import ConfigError
    from protocols.ulid import new_ulid

    by = _admin(who)
    reg = _registry(ctx)
    text = body.site_yaml if body is not None and body.site_yaml is not None else None
    source = "site_yaml"
    if text is None:
        last = reg.last_push(site)
        if last is None:
            raise HTTPException(409, f"no config has been pushed for site {site} yet: send site_yaml")
        text, source = last[1], f"the last push of {site} (version {last[0]})"
    try:
        composed = compose(text, source, reg, site)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    nodes = sorted({r["node"] for r in ctx.store.load_nodes() if r["site"] == site})
    if not nodes:
        raise HTTPException(409, f"no node of site {site} is known to the cloud yet")
    if ctx.ingest is None or not ctx.ingest.connected:
        # 409, not 503: the request is fine, the cloud's state (no broker link now) refuses it; retry later.
        raise HTTPException(409, "the cloud is not connected to the broker now: nothing was sent, try again")
    version = reg.record_push(site, composed.yaml_text, len(composed.keys), by=by)
    publish_config(ctx.ingest.client, composed, version, {n: new_ulid() for n in nodes})
    log.info("event=config_pushed site=%s version=%d nodes=%d by=%s", site, version, len(nodes), by)
    return PushOut(site=site, version=version, bands=len(composed.keys), nodes=nodes, notes=composed.notes)
