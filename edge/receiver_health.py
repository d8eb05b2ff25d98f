"""Receiver health as the node learned it, for `qwatch-edge doctor` and `qwatch-edge plan --receivers`.

The agent keeps its last node telemetry message in the data dir (`node-telemetry.json`, written at most
once a minute; `edge.agent_telemetry.TelemetrySaver`). Its `receivers` map (docs/protocol.md §5) says
what the wristband pipeline learned about each receiver: the level it stops hearing at, its gain's
deviation from the configured `rssi_offset`, and a state (`ok`, `gain_off`, `deaf`, `silent`). One bad
receiver can pull a block outside or hide an escape (docs/bands.md), so the technician sees it here
with what to check, and `plan` predicts the layout with it as it is.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge.agent_telemetry import NODE_TELEMETRY_FILE
from edge.doctor_checks import Check, ok, warn
from protocols.errors import ConfigError, PayloadError
from protocols.payloads import NodeTelemetry, ReceiverHealth, parse_payload

STALE_S = 900.0  # older than this, the file is from an agent that is not running now


def load_node_telemetry(path: Path, what: str = "receivers") -> NodeTelemetry:
    """A saved node telemetry message, validated as on the wire. Raises ConfigError naming the problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), what, f"cannot read: {exc.strerror}") from None
    try:
        return parse_payload(NodeTelemetry, raw)
    except PayloadError as exc:
        raise ConfigError(str(path), what, f"not a node telemetry message ({exc})") from None


def load_receivers(path: Path) -> tuple[dict[str, ReceiverHealth], float]:
    """The `receivers` map and `ts` of a saved node telemetry message. Raises ConfigError naming the problem."""
    tel = load_node_telemetry(path)
    return dict(tel.receivers), tel.ts


def saved_as_of(ts: float, now: float | None) -> str:
    """How old a saved telemetry message is, for a doctor row ("as of 40 s ago")."""
    age = (time.time() if now is None else now) - ts
    return f"as of {age:.0f} s ago" + (" (the agent is not running?)" if age > STALE_S else "")


def describe(rx: str, h: ReceiverHealth) -> tuple[str, str]:
    """What is wrong with a receiver that is not `ok`, and what to do about it (empty for `ok`)."""
    if h.state == "gain_off":
        return (f"{rx}: reads {abs(h.gain_dev_db):.1f} dB {'low' if h.gain_dev_db > 0 else 'high'} against its "
                f"rssi_offset (learned from {h.gain_links} links); it is corrected and down-weighted",
                f"check {rx}'s antenna, cable and enclosure; if the hardware is sound, add {h.gain_dev_db:+.1f} "
                "to its rssi_offset in the site config")
    if h.state == "deaf":
        return (f"{rx}: stops hearing at {h.floor_dbm:.0f} dBm, far above the other receivers; its silence "
                "counts for little, so escapes near it are caught later or not at all",
                f"check {rx}'s antenna and placement (metal, a USB 3 port or cable next to it), or replace it")
    if h.state == "silent":
        return (f"{rx}: heard nothing recently", f"check that {rx} is powered and its source in the site config "
                "(`qwatch-edge doctor` radios rows)")
    return "", ""


def check_receivers(data_dir: Path, now: float | None = None) -> list[Check]:
    """Doctor rows: one per receiver that is not ok in the agent's last saved node telemetry."""
    path = data_dir / NODE_TELEMETRY_FILE
    if not path.exists():
        return [ok("bands", "receiver health", f"{path} not written yet (the agent saves it once a minute)")]
    try:
        rxs, ts = load_receivers(path)
    except ConfigError as exc:
        return [warn("bands", "receiver health", str(exc), "let the agent run a minute to write it again")]
    when = saved_as_of(ts, now)
    if not rxs:
        return [ok("bands", "receiver health", f"no receiver health in {path} yet ({when})")]
    out = []
    for rx, h in sorted(rxs.items()):
        detail, fix = describe(rx, h)
        if detail:
            out.append(warn("bands", f"receiver {rx}", f"{h.state}: {detail} ({when})", fix))
    if not out:
        floors = [h.floor_dbm for h in rxs.values()]
        out.append(ok("bands", "receiver health", f"{len(rxs)} receivers ok, floors {min(floors):.0f} … "
                      f"{max(floors):.0f} dBm ({when})"))
    return out
