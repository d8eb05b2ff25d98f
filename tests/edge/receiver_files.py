"""A node telemetry file as the agent saves it, with receiver health from a real `Hearing` (test helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.agent_telemetry import NODE_TELEMETRY_FILE, TelemetrySaver
from edge.bands.hearing import Hearing, HearingParams
from protocols.payloads import NodeTelemetry


def save_health(data_dir: Path, rx_ids: list[str], *, deaf: str, low: str, ts: float) -> Path:
    """Receiver `deaf` stops hearing at -84 dBm (the others at -98), `low` reads 7 dB low; saved like the agent."""
    h = Hearing(rx_ids, 3.0, HearingParams(min_samples=100, gain_min_links=10))
    hist = np.zeros((len(rx_ids), 141), dtype=np.int64)
    for r, rx in enumerate(rx_ids):
        floor = -84 if rx == deaf else -98
        hist[r, floor + 140: floor + 170] = 20
    h.update_floors(hist, -98.0)
    lo = rx_ids.index(low)
    h.note_residuals(np.array([lo] * 80), np.full(80, -7.0))
    h.note_residuals(np.array([r for r in range(len(rx_ids)) if r != lo] * 20, dtype=np.int64),
                     np.zeros(20 * (len(rx_ids) - 1)))
    corr, var = h.corrections(np.full(len(rx_ids), 36.0))
    h.note_deviation(corr, var)
    tel = NodeTelemetry.model_validate({"schema": "qwatch.node/1", "ts": ts, "boot_id": "b1", "uptime_s": 60.0,
                                        "cpu_pct": 3.0, "mem_rss_mb": 80.0, "outbox_depth": 0,
                                        "receivers": h.report()})
    data_dir.mkdir(parents=True, exist_ok=True)
    assert TelemetrySaver(data_dir).maybe_save(tel, ts)
    return data_dir / NODE_TELEMETRY_FILE


def save_breach_null(data_dir: Path, null_state: dict[str, float | int], *, ts: float) -> Path:
    """A node telemetry file carrying an empirical null's `state()` as the agent reports it."""
    tel = NodeTelemetry.model_validate({"schema": "qwatch.node/1", "ts": ts, "boot_id": "b1", "uptime_s": 600.0,
                                        "cpu_pct": 3.0, "mem_rss_mb": 80.0, "outbox_depth": 0,
                                        "watchdogs": {"breach_null": null_state}})
    data_dir.mkdir(parents=True, exist_ok=True)
    assert TelemetrySaver(data_dir).maybe_save(tel, ts)
    return data_dir / NODE_TELEMETRY_FILE
