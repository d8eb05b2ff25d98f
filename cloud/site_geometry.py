"""What the dashboard may know about a site's layout: zones, receivers and beacons in site metres.

Built from a validated site config (``--site-config``) by whitelisting fields, so nothing else in the
file reaches the API: no band keys (they are never in the site config anyway), no camera URLs (they
may carry RTSP credentials), no person references, no receiver device paths.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.site_config import SiteConfig

Point = tuple[float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneShape(_Model):
    """A permitted or restricted area."""

    id: str
    kind: Literal["permitted", "restricted"]
    polygon: list[Point] = Field(min_length=3)


class Marker(_Model):
    """A fixed thing at a surveyed position: a receiver (``id`` is its name) or a beacon (its band ID)."""

    id: str
    position: Point


class SiteGeometry(_Model):
    """One site's drawable layout, in site metres (x east, y north)."""

    site: str
    name: str = ""
    zones: list[ZoneShape]
    receivers: list[Marker] = Field(default_factory=list)
    beacons: list[Marker] = Field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: SiteConfig) -> SiteGeometry:
        """Copy only the drawable, non-secret parts of a validated site config."""
        return cls(
            site=cfg.site.id,
            name=cfg.site.name,
            zones=[ZoneShape(id=z.id, kind=z.kind, polygon=list(z.polygon)) for z in cfg.zones],
            receivers=[Marker(id=r.id, position=r.position) for r in cfg.receivers],
            beacons=[Marker(id=str(b.id), position=b.position) for b in cfg.beacons],
        )
