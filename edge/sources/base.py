"""The observation-source contract and the parsing of a receiver's `source:` value.

Every radio path (BlueZ through bleak, the serial scanner co-processor, the simulator)
feeds the same stream of `RawObservation`s. Each source runs its own thread and calls the
sink from that thread, so the sink must be thread-safe (the agent puts into a queue).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from protocols.errors import ConfigError
from protocols.observation import RawObservation

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
