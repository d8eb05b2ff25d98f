"""The observation stream (docs/protocol.md §2): one advert as one receiver heard it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from protocols.errors import PayloadError


@dataclass(frozen=True, slots=True)
class RawObservation:
    """One advert heard by one receiver. `data` is the manufacturer payload after the company ID."""

    ts: float
    rx: str
    rssi: int
    company_id: int
    data: bytes

    def to_json_line(self) -> str:
        """The JSON Lines form used by observation logs and `qwatch-edge replay` (no newline)."""
        return json.dumps(
            {"ts": self.ts, "rx": self.rx, "rssi": self.rssi, "company_id": self.company_id,
             "data": self.data.hex()},
            separators=(", ", ": "),
        )


MAX_LINE = 4096  # a canonical line is ~110 characters: anything this long is not an observation


def parse_observation_line(line: str) -> RawObservation:
    """Parse one observation-log line. Raises PayloadError saying what is wrong with it."""
    if len(line) > MAX_LINE:
        raise PayloadError("too_long", f"line of {len(line)} characters; an observation is under {MAX_LINE}")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # ValueError: also a number past int's digit limit
        raise PayloadError("json", f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise PayloadError("shape", "an observation must be a JSON object")
    extra = set(obj) - {"ts", "rx", "rssi", "company_id", "data"}
    if extra:
        raise PayloadError("unknown_key", f"unknown keys {sorted(extra)}")
    ts, rx, rssi, cid, data = (obj.get(k) for k in ("ts", "rx", "rssi", "company_id", "data"))
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise PayloadError("ts", f"ts must be a finite number of Unix seconds, got {ts!r}")
    if not isinstance(rx, str) or not rx:
        raise PayloadError("rx", f"rx must be a non-empty receiver ID string, got {rx!r}")
    if isinstance(rssi, bool) or not isinstance(rssi, int | float) or not -127 <= rssi <= 20:
        raise PayloadError("rssi", f"rssi must be a number of dBm in -127..20, got {rssi!r}")
    if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid <= 0xFFFF:
        raise PayloadError("company_id", f"company_id must be an integer 0..65535, got {cid!r}")
    if not isinstance(data, str):
        raise PayloadError("data", "data must be a hex string")
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        raise PayloadError("data", f"data is not valid hex: {data[:40]!r}") from None
    return RawObservation(float(ts), rx, round(rssi), cid, raw)
