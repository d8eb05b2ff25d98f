"""What `qwatch-edge run` can set (`AgentOptions`, with its bounds) and what development tools may inject.

Development tools inject through `AgentHooks` (the product runs with none): the sim receivers'
scenario, and an extra alert source run in the agent loop (devtools.storm's synthetic alert
storm, for the fault-injection suite and benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge.mqtt_link import LINK_BOUNDS
from protocols.bounds import Range, check_bounds
from protocols.payloads import Alert
from protocols.site_config import SiteConfig


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """Everything `qwatch-edge run` can set."""

    config: Path
    keys: Path
    node: str
    broker_host: str
    broker_port: int
    data_dir: Path
    sim_seed: int = 0
    sim_start_ts: float | None = None
    keepalive_s: int = 15
    will_delay_s: int = 5
    reconnect_max_s: float = 10.0
    max_inflight: int = 50
    telemetry_buffer: int = 600
    duration_s: float = 0.0
    record: Path | None = None
    cameras: bool = True
    node_telemetry_s: float = 5.0
    tick_s: float = 0.2
    credentials: Path | None = None  # MQTT credentials bundle: TLS + username/password

    def __post_init__(self) -> None:
        check_bounds(self, AGENT_BOUNDS)


# Bounds of AgentOptions, which are also the `qwatch-edge run` options' bounds (edge/cli.py;
# tests/edge/test_cli.py checks they match). The link settings are LinkConfig's; reconnect_max_s
# may not go below the link's reconnect_min_s (0.5 s).
AGENT_BOUNDS = {
    "broker_port": LINK_BOUNDS["port"], "sim_seed": Range(ge=0), "sim_start_ts": Range(ge=0),
    "keepalive_s": LINK_BOUNDS["keepalive_s"], "will_delay_s": LINK_BOUNDS["will_delay_s"],
    "reconnect_max_s": Range(ge=0.5, le=3600), "max_inflight": LINK_BOUNDS["max_inflight"],
    "telemetry_buffer": LINK_BOUNDS["telemetry_buffer"], "duration_s": Range(ge=0),
    "node_telemetry_s": Range(ge=0.1, le=3600), "tick_s": Range(ge=0.01, le=10),
}


class AlertSource(Protocol):
    """An extra alert producer run in the agent loop, injected by development tools."""

    def step(self, mono: float, emit: Callable[[Alert], None]) -> None:
        """Emit (commit to the outbox) the alerts due at monotonic time `mono`."""
        ...

    def describe(self) -> str:
        """One log fragment (key=value pairs) saying what the source will produce."""
        ...


@dataclass(frozen=True, slots=True)
class AgentHooks:
    """What a development tool may inject into the agent (devtools.dev_agent); the product uses none."""

    # The sim receivers' scenario (an edge.sim.scenarios.Scenario) instead of the default one.
    scenario: Callable[[SiteConfig], Any] | None = None
    # An extra alert source; the site config is given so the source can name the site.
    alert_source: Callable[[AgentOptions, SiteConfig], AlertSource] | None = None
