"""What every API route reads from, and the FastAPI dependencies that hand it (and the caller) to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from fastapi.requests import HTTPConnection

from cloud.alert_store import AlertStore
from cloud.auth import OPEN, Authenticator, Principal, bearer_token
from cloud.band_registry import BandRegistry
from cloud.ingest import Ingest
from cloud.live import LiveHub
from cloud.site_geometry import SiteGeometry
from cloud.timeseries import TelemetryWriter

ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ULID_RE = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"


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
    bands: BandRegistry | None = None  # the band registry (cloud.band_registry); None: routes answer 503


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
