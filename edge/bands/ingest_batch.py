"""Batched observation intake: every observation between two ticks in one call (used by `replay`).

`observe_batch(pipe, …)` is exactly `pipe.observe` called on each observation in turn. Why it is
exact, step by step:

- Between two ticks nothing on the observation path reads the tracker (filter windows, powers,
  last-heard times, RSSI histogram): only `tick` does. So the tracker writes can be collected in
  arrival order and applied once at the end (`Tracker.add_many`), which reproduces sequential
  `add` calls: ring slots per band × receiver in arrival order, last write wins for the band's
  power and the receiver's last-heard time, max for the band's last sample, sums for the histogram.
- Everything else (duplicate table, verifier, security alarms, per-advert rules, alert sequence
  numbers) runs per observation in arrival order through the same code `observe` uses
  (`BandPipeline.verify_observation`), so alerts, their IDs and order, warnings and counters are the same.
- The duplicate fast path is `observe`'s own: a payload equal (as lowercase hex, i.e. byte for
  byte) to a band's last accepted one, same company ID, within 2 s of its acceptance, is what the
  verifier would call a duplicate (docs/protocol.md §1): counted and sampled without decoding or CMAC.
  So each distinct advert is decoded and authenticated once, on its first reception.

The only difference: counters for unknown receivers and duplicates are added once per batch, so a
counter key may first appear in `counters()` in another position (the values are equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from protocols.verify import DUPLICATE

if TYPE_CHECKING:
    from edge.bands.pipeline import BandPipeline
    from protocols.payloads import Alert

# (band index, receiver index, ts, rssi, measured_power): where a verified RSSI sample goes
SampleSink = Callable[[int, int, float, int, int], None]

UNKNOWN_RX = "unknown_rx"


def observe_batch(pipe: BandPipeline, ts: Sequence[float], rx: Sequence[str], rssi: Sequence[int],
                  company_id: Sequence[int], data_hex: Sequence[str]) -> list[Alert]:
    """`pipe.observe` for each observation in order, with the tracker writes vectorised.

    `data_hex` holds each payload as lowercase hex (what observation logs carry); it must be
    valid hex. Returns the new alerts in the order `observe` would have returned them.
    """
    rx_index = pipe.tracker.rx_index
    dup = pipe.duplicate_table()
    site_cid = pipe.site.company_id
    verified = pipe.verify_observation
    samples: list[tuple[int, int, float, int, int]] = []
    keep = samples.append

    def sink(band_idx: int, rx_idx: int, t: float, level: int, power: int) -> None:
        keep((band_idx, rx_idx, t, level, power))

    alerts: list[Alert] = []
    unknown = dups = 0
    for t, r, s, c, d in zip(ts, rx, rssi, company_id, data_hex, strict=True):
        ri = rx_index.get(r)
        if ri is None:
            unknown += 1
            continue
        hit = dup.get(d)
        if hit is not None and c == site_cid and abs(t - hit[0]) <= 2.0:
            dups += 1
            keep((hit[2], ri, t, s, hit[1].measured_power))
            continue
        found = verified(t, ri, s, c, bytes.fromhex(d), d, sink)
        if found:
            alerts += found
    pipe.add_counts({UNKNOWN_RX: unknown, DUPLICATE: dups})
    if samples:
        band_idx, rx_idx, t_s, level_s, power_s = zip(*samples, strict=True)
        pipe.tracker.add_many(np.array(band_idx, dtype=np.int64), np.array(rx_idx, dtype=np.int64),
                              np.array(t_s, dtype=np.float64), np.array(level_s, dtype=np.float64),
                              np.array(power_s, dtype=np.float64))
    return alerts
