"""What every API route reads from, and the FastAPI dependencies that hand it (and the caller) to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Query
from fastapi.requests import HTTPConnection
from pydantic import BaseModel

from cloud.alert_store import AlertStore
from cloud.auth import OPEN, Authenticator, Principal, bearer_token
from cloud.band_registry import BandRegistry
from cloud.ingest import Ingest
from cloud.live import LiveHub
from cloud.notifier import Notifier
from cloud.site_geometry import SiteGeometry
from cloud.timeseries import TelemetryWriter
from protocols.text import LabelError, clean_label

ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ULID_RE = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"
DEFAULT_TZ = "Asia/Ho_Chi_Minh"


class ErrorBody(BaseModel):
    """Every refusal: ``{"error", "detail"}`` (401/403/429) or FastAPI's ``{"detail"}`` (404/409/422)."""

    error: str | None = None
    detail: Any = None


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the refusals a route may answer (schemathesis checks none is undocumented)."""
    words = {400: "bad request", 401: "no valid bearer token (sign-in on)", 403: "outside the caller's role or sites",
             404: "not found", 409: "conflicts with the current state", 422: "invalid input",
             429: "too many failed attempts: retry after the Retry-After header's seconds",
             503: "a backing service is unavailable"}
    return {c: {"model": ErrorBody, "description": words[c]} for c in codes}


def label_param(value: str | None, what: str = "person") -> str | None:
    """A free-text query parameter (a person's label): NFC, no control characters, or 422."""
    if value is None:
        return None
    try:
        return clean_label(value, max_len=64, what=what, allow_empty=True) or None
    except LabelError as exc:
        raise HTTPException(422, str(exc)) from None


PersonParam = Annotated[str | None, Query(max_length=64, description="part of the person's label (NFC)")]


@dataclass
class CloudContext:
    """Everything the API reads from. ``ingest``/``writer`` are None in an API-only process;
    ``sites`` holds the geometry of the sites whose config the cloud was given (by site ID)."""

    store: AlertStore
    hub: LiveHub
    ingest: Ingest | None = None
    writer: TelemetryWriter | None = None
    vm_url: str | None = None
    sites: Mapping[str, SiteGeometry] = field(default_factory=dict)
    auth: Authenticator | None = None  # None: no --users, the API is open (tests, demo-like setups)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TZ))  # the province's: reports, CSV times
    notifier: Notifier | None = None
    people: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # site -> band -> label (configs)
    bands: BandRegistry | None = None  # the band registry (cloud.band_registry); None: routes answer 503
    # The live feed's ``watch=auto``: a province user gets every band position live up to this many bands,
    # above it per-site summaries and the positions of the sites they open (docs/cloud.md, province scale).
    live_all_bands: int = 1000


def get_ctx(conn: HTTPConnection) -> CloudContext:
    """The app's context, for HTTP and WebSocket routes alike."""
    ctx: CloudContext = conn.app.state.ctx
    return ctx


Ctx = Annotated[CloudContext, Depends(get_ctx)]


def get_principal(conn: HTTPConnection) -> Principal:
    """The authenticated caller of an HTTP route (raises AuthError → 401); everyone when auth is off."""
    ctx: CloudContext = conn.app.state.ctx
    if ctx.auth is None:
        return OPEN
    client = conn.client.host if conn.client else "-"
    return ctx.auth.authenticate(bearer_token(conn.headers), client=client)


User = Annotated[Principal, Depends(get_principal)]
