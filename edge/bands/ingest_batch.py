"""The per-advert front of the wristband pipeline: receiver look-up, duplicate table, verifier.

`AdvertFront` turns observations into what the rest of the pipeline needs, without touching it:

- samples (band index, receiver index, ts, rssi, measured power) for the tracker, in arrival order;
- events for the rules, in arrival order: each newly accepted advert's status fields (`Accepted`) and
  each verifier alarm (`Security`: advert_forgery, advert_replay);
- counts of adverts by outcome.

`BandPipeline.apply(batch)` (the back) feeds those to the rules and the tracker. The front reads
no tracker or rule state, so `replay --jobs 2` can run it in another process (edge/replay_jobs.py)
and the output is the same by construction: the same code runs on the same inputs in the same order.

Batches (`AdvertFront.batch`, used by `replay`) are exactly the per-observation path (`one`, used
by the live agent) called on each observation in turn:

- Between two ticks nothing on the observation path reads the tracker (filter windows, powers,
  last-heard times, RSSI histogram): only `tick` does. So the tracker writes can be collected in
  arrival order and applied once at the end (`Tracker.add_many`), which reproduces sequential
  `add` calls: ring slots per band × receiver in arrival order, last write wins for the band's
  power and the receiver's last-heard time, max for the band's last sample, sums for the histogram.
- Everything else (duplicate table, verifier, security alarms, per-advert rules, alert sequence
  numbers) runs per observation in arrival order, so alerts, their IDs and order, warnings and
  counters are the same.
- The duplicate fast path: a payload equal (as lowercase hex, i.e. byte for byte) to a band's last
  accepted one, same company ID, within the duplicate window of its acceptance, is what the verifier
  would call a duplicate (docs/protocol.md §1): counted and sampled without decoding or CMAC. So each
  distinct advert is decoded and authenticated once, on its first reception.

The only difference: counters for unknown receivers and duplicates are added once per batch, so a
counter key may first appear in `counters()` in another position (the values are equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from protocols.verify import ACCEPTED, DUPLICATE, AdvertVerifier

UNKNOWN_RX = "unknown_rx"

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


class Accepted(NamedTuple):
    """A newly accepted advert's status fields, for the band's per-advert rules."""

    ts: float
    band: int
    flags: int
    battery: int | None
    temp_c: float | None
    counter: int  # the advert's counter: the band's advert interval is learned from its steps


class Security(NamedTuple):
    """A verifier alarm (advert_forgery or advert_replay) and the outcome that raised it."""

    ts: float
    band: int
    alarm: str
    outcome: str


Event = Accepted | Security


@dataclass(slots=True)
class FrontBatch:
    """What the front made of a run of observations: samples as columns, events, counts."""

    band_idx: I64
    rx_idx: I64
    ts: F64
    rssi: F64
    power: F64
    events: list[Event]
    counts: dict[str, int]


class AdvertFront:
    """Receiver index, duplicate table and verifier of one site's pipeline (docs/protocol.md §1)."""

    def __init__(self, verifier: AdvertVerifier, band_index: Mapping[int, int], rx_index: Mapping[str, int],
                 company_id: int, dup_window_s: float = 2.0) -> None:
        self.verifier = verifier
        self.band_index = band_index
        self.rx_index = rx_index
        self.company_id = company_id
        self.dup_window_s = dup_window_s
        self.dup: dict[str, tuple[float, int, int]] = {}  # payload hex -> (accepted at, band index, power)
        self.last_payload: dict[int, str] = {}  # band -> hex of its last accepted payload

    def one(self, ts: float, rx: str, company_id: int, data: bytes,
            events: list[Event], counts: dict[str, int]) -> tuple[int, int, int] | None:
        """One observation: (band index, receiver index, measured power) of its sample, or None.

        Events go to `events`, the outcome to `counts`.
        """
        rx_idx = self.rx_index.get(rx)
        if rx_idx is None:
            counts[UNKNOWN_RX] = counts.get(UNKNOWN_RX, 0) + 1
            return None
        key = data.hex()
        hit = self.dup.get(key)
        if hit is not None and company_id == self.company_id and abs(ts - hit[0]) <= self.dup_window_s:
            counts[DUPLICATE] = counts.get(DUPLICATE, 0) + 1
            return hit[1], rx_idx, hit[2]
        found = self._verify(ts, company_id, bytes(data), key, events, counts)
        return None if found is None else (found[0], rx_idx, found[1])

    def batch(self, ts: Sequence[float], rx: Sequence[str], rssi: Sequence[int] | F64,
              company_id: Sequence[int], data_hex: Sequence[str]) -> FrontBatch:
        """Observations in arrival order (`data_hex`: payloads as valid lowercase hex): `one` on each."""
        n = len(ts)
        rx_get = self.rx_index.get
        rx_of = [rx_get(r, -1) for r in rx]
        band = [-1] * n
        power = [0] * n
        dup_get = self.dup.get
        site_cid = self.company_id
        window = self.dup_window_s
        verify = self._verify
        events: list[Event] = []
        counts: dict[str, int] = {}
        unknown = dups = 0
        i = -1
        for t, r, c, d in zip(ts, rx_of, company_id, data_hex, strict=True):
            i += 1
            if r < 0:
                unknown += 1
                continue
            hit = dup_get(d)
            if hit is not None and c == site_cid and abs(t - hit[0]) <= window:
                dups += 1
                band[i] = hit[1]
                power[i] = hit[2]
                continue
            found = verify(t, c, bytes.fromhex(d), d, events, counts)
            if found is not None:
                band[i], power[i] = found
        if unknown:
            counts[UNKNOWN_RX] = counts.get(UNKNOWN_RX, 0) + unknown
        if dups:
            counts[DUPLICATE] = counts.get(DUPLICATE, 0) + dups
        b = np.array(band, dtype=np.int64)
        keep = b >= 0
        return FrontBatch(b[keep], np.array(rx_of, dtype=np.int64)[keep], np.asarray(ts, dtype=np.float64)[keep],
                          np.asarray(rssi, dtype=np.float64)[keep], np.array(power, dtype=np.float64)[keep],
                          events, counts)

    def _verify(self, ts: float, company_id: int, data: bytes, key: str,
                events: list[Event], counts: dict[str, int]) -> tuple[int, int] | None:
        """What the duplicate table could not settle: the verifier. Returns (band index, power) of a sample."""
        verdict = self.verifier.verify(ts, company_id, data)
        outcome = verdict.outcome
        counts[outcome] = counts.get(outcome, 0) + 1
        if verdict.alarm is not None and verdict.band_id is not None:
            events.append(Security(ts, verdict.band_id, verdict.alarm, outcome))
        advert = verdict.advert
        if advert is None or (outcome != ACCEPTED and outcome != DUPLICATE):
            return None
        band = advert.band_id
        idx = self.band_index.get(band)
        if idx is None:
            return None
        if outcome == ACCEPTED:
            old = self.last_payload.get(band)
            if old is not None:
                self.dup.pop(old, None)
            self.last_payload[band] = key
            self.dup[key] = (ts, idx, advert.measured_power)
            events.append(Accepted(ts, band, advert.flags, advert.battery, advert.skin_temp_c, advert.counter))
        return idx, advert.measured_power
