"""The ingest's telemetry job: band and node telemetry into VictoriaMetrics and the live feed.

Band telemetry is the bulk of the ingest's traffic (one message per node per second, one entry per
band), so this path avoids per-band Python work where pydantic can do it in one call: the positions
are dumped once for all bands, and the live message is serialised by pydantic's JSON encoder, not
re-encoded from dicts (bench.cloud_load; measured in docs/benchmarks.md).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from cloud.live import LiveHub
from cloud.timeseries import TelemetryWriter, band_lines, node_lines
from protocols.payloads import BandState, BandTelemetry, NodeTelemetry

_BANDS = TypeAdapter(list[BandState])


def positions_json(site: str, node: str, tel: BandTelemetry) -> str:
    """The live ``bands`` message's data as JSON: the same object as :func:`positions`, encoded by pydantic.

    The telemetry was validated on the way in (every number finite and bounded, docs/protocol.md §4),
    so the encoder never meets a NaN; ``ts`` goes through ``json.dumps`` with ``allow_nan=False`` anyway."""
    head = json.dumps({"site": site, "node": node, "ts": tel.ts}, separators=(",", ":"), allow_nan=False)
    return f'{head[:-1]},"bands":{_BANDS.dump_json(tel.bands).decode()}}}'


def positions(site: str, node: str, tel: BandTelemetry) -> dict[str, Any]:
    """The latest positions of one node as the API and the live hello give them."""
    return {"site": site, "node": node, "ts": tel.ts, "bands": _BANDS.dump_python(tel.bands)}


def band_telemetry(site: str, node: str, tel: BandTelemetry, writer: TelemetryWriter | None,
                   hub: LiveHub | None) -> None:
    """One ``…/telemetry/bands`` message: its lines to VictoriaMetrics, its positions to the live feed
    (either is skipped when None: cloud.ingest's relay of every node's positions)."""
    if writer is not None:
        writer.submit(band_lines(site, node, tel))
    if hub is None:
        return
    # Encoded only if someone watches the site; otherwise only remembered (the next dashboard's hello).
    hub.publish_positions(site, node, positions(site, node, tel), data_json=lambda: positions_json(site, node, tel))


def node_telemetry(site: str, node: str, tel: NodeTelemetry, writer: TelemetryWriter | None) -> dict[str, Any]:
    """One ``…/telemetry/node`` message: its lines to VictoriaMetrics; returns the health for /api."""
    if writer is not None:
        writer.submit(node_lines(site, node, tel))
    return tel.model_dump(by_alias=True)
