"""The observation-source contract and the factory that builds one source per receiver.

Every radio path (BlueZ through bleak, the serial scanner co-processor, the simulator)
feeds the same stream of `RawObservation`s. Each source runs its own thread and calls the
sink from that thread, so the sink must be thread-safe (the agent puts into a queue).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from protocols.errors import ConfigError
from protocols.observation import RawObservation

if TYPE_CHECKING:
    from protocols.site_config import SiteConfig

Sink = Callable[[RawObservation], None]

SOURCE_HELP = (
    'allowed: "bluez:<adapter>" (e.g. bluez:hci0), "serial:<device>" (e.g. serial:/dev/ttyACM0), "sim"'
)


@runtime_checkable
class ObservationSource(Protocol):
    """One receiver (or, for the simulator, all sim receivers) producing observations."""

    @property
    def receiver_id(self) -> str:
        """The receiver ID from the site config (``sim`` for the combined simulator source)."""
        ...

    def start(self, sink: Sink) -> None:
        """Start the source's own thread; `sink` is called from that thread for each advert."""
        ...

    def stop(self) -> None:
        """Stop and join the thread. Idempotent; never raises."""
        ...

    def stats(self) -> dict[str, int | float]:
        """Watchdog counters (restarts and errors by reason, adverts, last-advert age)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed `source:` string of one receiver."""

    kind: str  # "bluez" | "serial" | "sim"
    target: str  # adapter name, device path, or "" for sim


def parse_source(text: str, *, key: str = "source", file: str = "site config") -> SourceSpec:
    """Parse a receiver's `source:` value. Raises ConfigError naming the key and the allowed forms."""
    kind, sep, target = text.partition(":")
    if text == "sim":
        return SourceSpec("sim", "")
    if sep and kind == "bluez" and target and "/" not in target:
        return SourceSpec("bluez", target)
    if sep and kind == "serial" and target:
        return SourceSpec("serial", target)
    raise ConfigError(file, key, f"unknown receiver source {text!r}; {SOURCE_HELP}")


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
