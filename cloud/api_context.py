"""What every API route reads from, and the FastAPI dependency that hands it to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from fastapi.requests import HTTPConnection

from cloud.alert_store import AlertStore
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


def get_ctx(conn: HTTPConnection) -> CloudContext:
    """The app's context, for HTTP and WebSocket routes alike."""
    ctx: CloudContext = conn.app.state.ctx
    return ctx


Ctx = Annotated[CloudContext, Depends(get_ctx)]
