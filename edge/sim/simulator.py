"""The site simulator: moves people per a Scenario and turns their adverts into observations.

Each band (and each beacon) advertises once per `interval_s` with a rising counter, at its own
phase plus a few ms of jitter, as a real BLE advertiser does. Every advert is heard (or not) by
each simulated receiver through the RadioChannel. Output is the observation stream every
source feeds (RawObservation), time-ordered.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import numpy as np

from edge.sim.radio import RadioChannel, RadioParams
from edge.sim.radio_alt import AltRadioChannel, AltRadioParams
from edge.sim.scenarios import BandScript, Scenario, in_any, walking
from protocols.advert import FLAG_CHARGING, FLAG_LOW_BATTERY, FLAG_MOVING, FLAG_SOS, FLAG_STRAP_OPEN, encode_status
from protocols.observation import RawObservation
from protocols.site_config import SiteConfig

log = logging.getLogger("qwatch.edge.sim")

BAND_POWER_DBM = -59
BEACON_POWER_DBM = -55
RX_LATENCY_S = 0.02

COUNTER_EPOCH = 1_700_000_000.0  # counters advance from here at one per advert interval


class Simulator:
    """Deterministic (per seed) simulation of a site's bands, beacons and receivers."""

    def __init__(
        self,
        site: SiteConfig,
        keys: Mapping[int, bytes],
        *,
        seed: int = 0,
        start_ts: float = 0.0,
        scenario: Scenario | None = None,
        radio: RadioParams | AltRadioParams | str | None = None,
        receivers: Collection[str] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.site = site
        self.start_ts = start_ts
        self.interval_s = interval_s
        self.scenario = scenario if scenario is not None else walking(site, seed)
        fallback = walking(site, seed).default
        assert fallback is not None
        self._fallback = fallback
        self._rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x51])
        rxs = [r for r in site.receivers if receivers is None or r.id in receivers]
        self.rx_ids = [r.id for r in rxs]
        self.band_ids = [b.id for b in site.bands if b.id in keys]
        self.beacon_ids = [b.id for b in site.beacons if b.id in keys]
        missing = [b.id for b in site.bands if b.id not in keys] + [b.id for b in site.beacons if b.id not in keys]
        if missing:
            log.warning("event=sim_no_key bands=%s note=not simulated", missing[:10])
        self._keys = [keys[b] for b in self.band_ids + self.beacon_ids]
        self._tx_ids = self.band_ids + self.beacon_ids
        n_tx = len(self._tx_ids)
        self._n_bands = len(self.band_ids)
        self._beacon_pos = np.array([b.position for b in site.beacons if b.id in keys], dtype=np.float64)
        self._power = np.array([BAND_POWER_DBM] * self._n_bands + [BEACON_POWER_DBM] * len(self.beacon_ids),
                               dtype=np.float64)
        rx_pos = np.array([r.position for r in rxs], dtype=np.float64).reshape(-1, 2)
        rx_off = np.array([r.rssi_offset for r in rxs], dtype=np.float64)
        self.channel: RadioChannel | AltRadioChannel
        # radio="alt" (or AltRadioParams): the independent channel for robustness tests (radio_alt.py).
        if radio == "alt" or isinstance(radio, AltRadioParams):
            alt = radio if isinstance(radio, AltRadioParams) else AltRadioParams()
            self.channel = AltRadioChannel(alt, rx_pos, rx_off, n_tx, self._rng, n_bands=self._n_bands)
        elif radio is None or radio == "default" or isinstance(radio, RadioParams):
            params = radio if isinstance(radio, RadioParams) else RadioParams(
                path_loss_exponent=site.radio.path_loss_exponent, shadowing_db=site.radio.shadowing_db)
            self.channel = RadioChannel(params, rx_pos, rx_off, n_tx, self._rng)
        else:
            raise ValueError(f"radio: unknown model {radio!r} (allowed: 'default', 'alt')")
        # Per-transmitter advert interval (the alt channel's bands do not all advertise at exactly 1 Hz).
        self._interval = interval_s * getattr(self.channel, "interval_factor", np.ones(n_tx))
        self._next_ts = start_ts + self._rng.uniform(0, interval_s, n_tx)
        # A real band keeps its counter in flash and advances it once per advert (docs/protocol.md §1), so
        # a simulated world started later must continue above an earlier run's counters, or the edge
        # (which remembers them across restarts) rightly calls every advert a replay.
        elapsed = max(0.0, start_ts - COUNTER_EPOCH)
        self._counter = (self._rng.integers(0, 1_000_000, n_tx)
                         + (elapsed / np.maximum(self._interval, 1e-3)).astype(np.int64)).astype(np.int64)
        self.sent = 0
        self.heard = 0

    def _script(self, band_id: int) -> BandScript:
        return self.scenario.script(band_id, self._fallback)

    def _positions(self, idx: np.ndarray, ts: np.ndarray) -> np.ndarray:
        pos = np.empty((len(idx), 2))
        for k, (i, t) in enumerate(zip(idx.tolist(), ts.tolist(), strict=True)):
            if i < self._n_bands:
                pos[k] = self._script(self.band_ids[i]).mover.position(t - self.start_ts)
            else:
                pos[k] = self._beacon_pos[i - self._n_bands]
        return pos

    def _payload(self, i: int, t_rel: float) -> bytes | None:
        """The advert bytes for transmitter i at t_rel, or None while it is silent."""
        key, band_id, counter = self._keys[i], self._tx_ids[i], int(self._counter[i]) & 0xFFFFFFFF
        if i >= self._n_bands:
            return encode_status(band_id=band_id, counter=counter, key=key, company_id=self.site.company_id,
                                 battery=100, measured_power=BEACON_POWER_DBM)
        s = self._script(band_id)
        if in_any(t_rel, s.silent):
            return None
        flags = 0
        flags |= FLAG_STRAP_OPEN if in_any(t_rel, s.strap_open) else 0
        flags |= FLAG_SOS if in_any(t_rel, s.sos) else 0
        charging = in_any(t_rel, s.charging)
        flags |= FLAG_CHARGING if charging else 0
        still = in_any(t_rel, s.still)
        if not still and (s.mover.speed(t_rel) > 0.2 or self._rng.random() < s.fidget):
            flags |= FLAG_MOVING
        battery = round(min(max(s.battery_start - s.battery_drain_per_h * t_rel / 3600.0, 0.0), 100.0))
        flags |= FLAG_LOW_BATTERY if battery < 15 and not charging else 0
        temp = (38.6 if in_any(t_rel, s.fever) else s.base_temp_c) + float(self._rng.normal(0, 0.1))
        return encode_status(band_id=band_id, counter=counter, key=key, company_id=self.site.company_id,
                             flags=flags, battery=battery, skin_temp_c=round(temp, 2),
                             measured_power=BAND_POWER_DBM)

    def advance(self, until_ts: float) -> list[RawObservation]:
        """Every observation with an advert time up to `until_ts`, ordered by time."""
        out: list[tuple[float, int, bytes]] = []
        while True:
            due = np.nonzero(self._next_ts <= until_ts)[0]
            if len(due) == 0:
                break
            ts = self._next_ts[due].copy()
            self._next_ts[due] += self._interval[due] + self._rng.uniform(0, 0.01, len(due))
            self._counter[due] += 1
            self._emit(due, ts, out)
        out.sort(key=lambda o: o[0])
        cid = self.site.company_id
        rx_ids = self.rx_ids
        obs = [RawObservation(round(t, 3), rx_ids[r & 0xFF], -(r >> 8), cid, d) for t, r, d in out]
        self.heard += len(obs)
        return obs

    def _emit(self, due: np.ndarray, ts: np.ndarray, out: list[tuple[float, int, bytes]]) -> None:
        payloads = [self._payload(int(i), float(t) - self.start_ts) for i, t in zip(due, ts, strict=True)]
        keep = np.array([p is not None for p in payloads], dtype=bool)
        if not keep.any() or not self.rx_ids:
            return
        idx, tsk = due[keep], ts[keep]
        kept = [p for p in payloads if p is not None]
        self.sent += len(kept)
        rssi, ok = self.channel.transmit(idx, tsk, self._power[idx], self._positions(idx, tsk))
        delay = self._rng.uniform(0, RX_LATENCY_S, rssi.shape)
        for k, r in zip(*np.nonzero(ok), strict=True):
            # Pack rx index and the (negated, rounded) RSSI into one int to keep the sort cheap.
            level = round(-float(rssi[k, r]))
            out.append((float(tsk[k] + delay[k, r]), (max(level, 0) << 8) | int(r), kept[k]))

    def truth(self, ts: float) -> dict[int, tuple[float, float]]:
        """True position of every simulated band at `ts` (Unix seconds)."""
        return {b: self._script(b).mover.position(ts - self.start_ts) for b in self.band_ids}

    def beacon_positions(self) -> dict[int, tuple[float, float]]:
        """Beacon ID -> surveyed position."""
        return {b: (float(p[0]), float(p[1])) for b, p in zip(self.beacon_ids, self._beacon_pos, strict=True)}
