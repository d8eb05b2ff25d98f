"""The factory that builds one observation source per receiver of a site config.

Kept apart from `edge.sources.base` so the contract does not import its implementations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge.sources.base import ObservationSource, SourceSpec, parse_source
from protocols.errors import ConfigError

if TYPE_CHECKING:
    from protocols.site_config import SiteConfig


def open_sources(
    site: SiteConfig,
    keys: Mapping[int, bytes],
    *,
    sim_seed: int = 0,
    scenario: Any | None = None,
    sim_start_ts: float | None = None,
) -> list[ObservationSource]:
    """Build one source per hardware receiver, plus one real-time simulator for all `sim` receivers.

    Nothing is started; the caller calls `.start(sink)` on each. Two receivers on the same
    adapter or device are a configuration error, since one radio cannot be two receivers.
    """
    sources: list[ObservationSource] = []
    sim_ids: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for i, rx in enumerate(site.receivers):
        spec = parse_source(rx.source, key=f"receivers[{i}].source")
        if spec.kind == "sim":
            sim_ids.append(rx.id)
            continue
        other = seen.get((spec.kind, spec.target))
        if other is not None:
            raise ConfigError(
                "site config", f"receivers[{i}].source",
                f"{rx.source!r} is already receiver {other!r}; each adapter or device is one receiver",
            )
        seen[(spec.kind, spec.target)] = rx.id
        sources.append(_hardware_source(spec, rx.id, site.company_id))
    if sim_ids:
        from edge.sources.sim import SimSource

        sources.append(
            SimSource(site, keys, receivers=sim_ids, seed=sim_seed, scenario=scenario, start_ts=sim_start_ts)
        )
    return sources


def _hardware_source(spec: SourceSpec, rx_id: str, company_id: int) -> ObservationSource:
    # Imported lazily: a node with only serial receivers must not need a working D-Bus stack.
    if spec.kind == "bluez":
        from edge.sources.bleak_source import BleakSource

        return BleakSource(rx_id, adapter=spec.target, company_id=company_id)
    from edge.sources.serial_source import SerialSource

    return SerialSource(rx_id, device=spec.target, company_id=company_id)
