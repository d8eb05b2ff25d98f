"""Tracker: RSSI samples in, one position with an error radius per band per tick out.

It owns the per band × receiver filter windows, the receiver calibration learned from beacons,
and the localiser. Bands, beacons and receivers are mapped to dense indices once, so the per
sample path is two dict look-ups and a ring-buffer write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from edge.bands.advert_bins import AdvertBins
from edge.bands.calibration import Calibration, CalibrationState
from edge.bands.locate import LinkModel, LocateParams, locate, truncation_corrected
from edge.bands.rssi_filter import RssiWindows
from protocols.site_config import SiteConfig


@dataclass(frozen=True, slots=True)
class TrackerParams:
    """Tuning of the filter window and the localiser."""

    window: int = 8  # samples kept per band × receiver
    max_age_s: float = 8.0  # samples older than this are ignored
    calibrate_every_s: float = 10.0
    rx_alive_s: float = 30.0  # a receiver silent this long is presumed down, not "hearing nothing"
    floor_quantile: float = 0.005  # the reception floor: this low quantile of every RSSI heard
    floor_min_samples: int = 5000  # until then the LocateParams default stands
    heard_above_floor_db: float = 7.0  # a silent live receiver "should have heard" this far above the floor
    # Beacon pairs closer than this to the measured reception floor are left out of the calibration:
    # only the lucky samples of a link near the floor arrive, so its median reads high, and more so
    # the longer the link; fitted, that flattens the slope (exponent 2.2 for a true 2.7 on a 500-band
    # site, which pushed weakly heard bands tens of metres outside: 73 false breaches in 83
    # band-hours; with this margin and the truncation correction: 2). docs/bands.md, Calibration.
    calibration_above_floor_db: float = 5.0
    assumed_floor_dbm: float = -100.0  # until the floor is measured
    # Calibration uncertainty beyond this (dB) is added to each receiver's link σ (LocateParams.model_error_db
    # already budgets this much for residual calibration error); None = off.
    calibration_budget_db: float | None = 2.0


@dataclass(frozen=True, slots=True)
class Estimates:
    """Position estimates for the bands (dense indices) that had fresh samples this tick."""

    idx: np.ndarray  # (K,) band indices
    xy: np.ndarray  # (K, 2)
    err_m: np.ndarray  # (K,)
    rx_count: np.ndarray  # (K,) receivers that heard the band in the window
    rssi: np.ndarray  # (K,) strongest filtered RSSI (dBm, offset-corrected)
    model: LinkModel | None = None  # to score candidate positions (the breach likelihood test)


@dataclass(frozen=True, slots=True)
class TrackerState:
    """What the tracker learns of the hardware and the place, for a restart: every level heard (site and per
    receiver, 1 dB bins from -140 dBm: the floors) and the beacon calibration. Not the bands' samples or fixes."""

    rssi_hist: np.ndarray  # (141,) int64
    rx_hist: np.ndarray  # (R, 141) int64
    calibration: CalibrationState


def _last_of(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `idx` and, for each, the position of its last occurrence."""
    uniq, first_rev = np.unique(idx[::-1], return_index=True)
    return uniq, len(idx) - 1 - first_rev


class Tracker:
    """Filter windows + calibration + localiser for one site."""

    def __init__(self, site: SiteConfig, ids: Iterable[int], params: TrackerParams | None = None) -> None:
        self.p = params or TrackerParams()
        self.ids = list(ids)
        self.index = {b: i for i, b in enumerate(self.ids)}
        self.rx_ids = [r.id for r in site.receivers]
        self.rx_index = {r: i for i, r in enumerate(self.rx_ids)}
        self.rx_offset = [float(r.rssi_offset) for r in site.receivers]
        self._rx_offset_arr = np.array(self.rx_offset, dtype=np.float64)
        self.rx_pos = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
        self.windows = RssiWindows(len(self.ids), len(self.rx_ids), self.p.window)
        self.power = np.full(len(self.ids), -59.0)
        self.last_sample = np.full(len(self.ids), -np.inf)
        self.last_xy = np.full((len(self.ids), 2), np.nan)
        self.last_xy_ts = np.full(len(self.ids), -np.inf)
        self.rx_last = [-math.inf] * len(self.rx_ids)
        # Histogram of every RSSI heard (1 dB bins from -140 dBm): its low tail is where the receivers
        # stop hearing, measured rather than assumed, so the "should have heard it" threshold follows
        # the real hardware (a deaf receiver must not push estimates away from it, a keen one helps).
        self.rssi_hist = np.zeros(141, dtype=np.int64)
        self.rx_hist = np.zeros((len(self.rx_ids), 141), dtype=np.int64)  # the same per receiver (its own floor)
        self.bins = AdvertBins(len(self.ids), len(self.rx_ids))  # per-second counts for the window breach test
        self.floor_dbm: float | None = None
        self.locate_params = LocateParams(path_loss_exponent=site.radio.path_loss_exponent,
                                          shadowing_db=site.radio.shadowing_db)
        beacon_idx = [self.index[b.id] for b in site.beacons if b.id in self.index]
        beacon_pos = np.array([b.position for b in site.beacons if b.id in self.index],
                              dtype=np.float64).reshape(-1, 2)
        self.calibration = Calibration(self.rx_pos, np.array(beacon_idx, dtype=np.int64), beacon_pos,
                                       site.radio.path_loss_exponent, pair_error_db=0.7 * site.radio.shadowing_db,
                                       bias_prior_db=site.radio.receiver_gain_sd_db,
                                       floor_dbm=self.p.assumed_floor_dbm + self.p.calibration_above_floor_db)
        self._next_calibration = -np.inf

    def add(self, band_idx: int, rx_idx: int, ts: float, rssi: float, measured_power: int) -> None:
        """One verified RSSI sample (accepted or duplicate advert)."""
        level = rssi + self.rx_offset[rx_idx]
        self.windows.add(band_idx, rx_idx, ts, level)
        b = min(max(int(level) + 140, 0), 140)
        self.rssi_hist[b] += 1
        self.rx_hist[rx_idx, b] += 1
        self.bins.add(band_idx, rx_idx, ts, level)
        self.power[band_idx] = measured_power
        self.rx_last[rx_idx] = ts
        if ts > self.last_sample[band_idx]:
            self.last_sample[band_idx] = ts

    def add_many(self, band_idx: np.ndarray, rx_idx: np.ndarray, ts: np.ndarray, rssi: np.ndarray,
                 measured_power: np.ndarray) -> None:
        """Verified samples in arrival order: the same state as `add` called for each in turn."""
        if len(band_idx) == 0:
            return
        level = rssi + self._rx_offset_arr[rx_idx]
        self.windows.add_many(band_idx, rx_idx, ts, level)
        lvl = np.clip(level.astype(np.int64) + 140, 0, 140)
        self.rssi_hist += np.bincount(lvl, minlength=141)
        np.add.at(self.rx_hist, (rx_idx, lvl), 1)
        self.bins.add_many(band_idx, rx_idx, ts, level)
        # "Last write wins" per band (power) and per receiver (last heard, in arrival order, not max).
        bands, last = _last_of(band_idx)
        self.power[bands] = measured_power[last]
        rxs, last_rx = _last_of(rx_idx)
        for r, t in zip(rxs.tolist(), ts[last_rx].tolist(), strict=True):
            self.rx_last[r] = t
        np.maximum.at(self.last_sample, band_idx, ts)

    def estimate(self, now: float, only: np.ndarray | None = None) -> Estimates:
        """Positions of the bands with samples in the window (optionally a subset of indices)."""
        fresh = self.last_sample > now - self.p.max_age_s
        if only is not None:
            mask = np.zeros(len(self.ids), dtype=bool)
            mask[only] = True
            fresh &= mask
        idx = np.nonzero(fresh)[0]
        if len(idx) == 0 or len(self.rx_ids) == 0:
            empty = np.zeros(0)
            return Estimates(idx, np.zeros((0, 2)), empty, empty.astype(np.int64), empty)
        med, n, spread = self.windows.filtered(idx, now, self.p.max_age_s, self.locate_params.compiled)
        if self._next_calibration == math.inf:  # restored: the first round waits for full filter windows (`restore`)
            self._next_calibration = now + self.p.max_age_s
        if now >= self._next_calibration:
            self._next_calibration = now + self.p.calibrate_every_s
            # The calibration sees the medians with the localiser's own truncation correction: a beacon
            # pair near the floor otherwise reads high, and more so the longer the link (see below).
            self.calibration.update(idx, truncation_corrected(med, n, spread, self.locate_params)[0],
                                    self.power[idx])
            self._update_floor()
        corrected = med + self.calibration.rx_bias[None, :]
        alive = np.array(self.rx_last) > now - self.p.rx_alive_s
        warm = np.where((self.last_xy_ts[idx] >= now - 2.5)[:, None], self.last_xy[idx], np.nan)
        xy, err, model = locate(corrected, n, spread, self.power[idx], self.rx_pos, self.locate_params,
                                self.calibration.exponent, alive, warm, extra_var_db2=self.calibration_var_db2())
        self.last_xy[idx] = xy
        self.last_xy_ts[idx] = now
        rx_count = np.count_nonzero(~np.isnan(med), axis=1)
        with np.errstate(all="ignore"):
            strongest = np.where(rx_count > 0, np.nanmax(np.where(np.isnan(med), -np.inf, corrected), axis=1),
                                 np.nan)
        return Estimates(idx, xy, err, rx_count, strongest, model)

    def calibration_var_db2(self) -> np.ndarray | None:
        """(R,) calibration variance (dB²) per receiver beyond what the link model already budgets, or None."""
        budget = self.p.calibration_budget_db
        if budget is None:
            return None
        return np.maximum(self.calibration.link_var_db2() - budget**2, 0.0)

    def _update_floor(self) -> None:
        """Re-measure the reception floor and move the silent-receiver threshold with it."""
        total = int(self.rssi_hist.sum())
        if total < self.p.floor_min_samples:
            return
        cum = np.cumsum(self.rssi_hist)
        floor = float(np.searchsorted(cum, self.p.floor_quantile * total) - 140)
        self.floor_dbm = floor
        self.locate_params = replace(self.locate_params, heard_threshold_dbm=floor + self.p.heard_above_floor_db)
        self.calibration.floor_dbm = floor + self.p.calibration_above_floor_db

    def snapshot(self) -> TrackerState:
        return TrackerState(self.rssi_hist.copy(), self.rx_hist.copy(), self.calibration.snapshot())

    def restore(self, s: TrackerState) -> None:
        """Start from `s` (the same receivers and beacons): the floors are measured again from the restored levels
        now, not at the first calibration round."""
        if s.rssi_hist.shape != self.rssi_hist.shape or s.rx_hist.shape != self.rx_hist.shape:
            raise ValueError(f"level histograms of shapes {s.rssi_hist.shape}, {s.rx_hist.shape}, "
                             f"this tracker has {self.rssi_hist.shape}, {self.rx_hist.shape}")
        self.calibration.restore(s.calibration)
        self.rssi_hist = np.maximum(np.asarray(s.rssi_hist, dtype=np.int64), 0)
        self.rx_hist = np.maximum(np.asarray(s.rx_hist, dtype=np.int64), 0)
        self._update_floor()
        # The restored averages weigh each new round by 0.1: a first round over a second or two of samples (a
        # median of one or two adverts per beacon pair) would move them by a tenth of a fading.
        self._next_calibration = math.inf
