"""A second, independent radio channel for robustness testing (``Simulator(..., radio="alt")``).

The default channel (`edge.sim.radio`) is the model the pipeline was designed around: the site's
own path-loss exponent, Gaussian shadowing split into a per-link AR(1) part and a per-packet part,
one loss curve. Real sites differ from it in exactly the ways this model does, so a detector that
only works on the default channel fails here:

* **The site YAML is wrong about the exponent**: the true n is drawn per seed from
  `exponent_range` (2.2–3.2) whatever `radio.path_loss_exponent` says.
* **Shadowing is a property of the place, not of the link in time** (Gudmundson): per receiver a
  Gaussian random field over the transmitter's position with exponential correlation
  exp(-Δd / `decorrelation_m`), σ `spatial_db`. A person standing still keeps the same shadow
  for as long as they stand; beacons have a fixed bias of their own, which the calibration cannot
  tell from a receiver gain error. Built from random Fourier features (the exponential covariance
  in 2-D has a Cauchy spectrum), so it is continuous and cheap to evaluate anywhere.
* **Body shadowing depends on the wearer's heading**: up to `body_db` when the receiver is behind
  the wearer (heading = direction of travel; standing people turn now and then).
* **Rician per-packet fading** with a K factor falling with distance (line of sight near a
  receiver, Rayleigh-like far away): a heavy lower tail, not a Gaussian in dB.
* Receiver gain errors uniform in ±`rx_gain_error_db`, per-receiver sensitivity floors uniform in
  `floor_range_dbm` (−98 … −88 dBm), band `measured_power` errors uniform in ±`power_error_db`.
* **Bursty loss** (Gilbert–Elliott per link): a good state with `loss_good` and a bad one
  (interference, a body in the way, a busy scanner) with `loss_bad`, mean burst `burst_s`.
* **Advert interval jitter**: each band advertises at its own interval in `interval_range`
  (× the nominal interval) plus BLE's 0–10 ms advDelay.

`.p` is a `RadioParams` of the nearest Gaussian model (true exponent, total σ, slow share, mean
loss, mean floor) for observers that need one (the benchmark's ideal observer); it is an
approximation of this channel, not the channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.sim.radio import RadioParams, apply_bad_receivers

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class AltRadioParams:
    """Parameters of the alternative channel (defaults: a plausible, unkind real site)."""

    exponent_range: tuple[float, float] = (2.2, 3.2)
    spatial_db: float = 4.0
    decorrelation_m: float = 7.0
    body_db: float = 5.0
    rician_k_near: float = 8.0  # K factor (linear) at 0 m; falls off with distance
    rician_k_scale_m: float = 5.0
    rx_gain_error_db: float = 6.0
    floor_range_dbm: tuple[float, float] = (-98.0, -88.0)
    floor_width_db: float = 1.5
    power_error_db: float = 3.0
    loss_good: float = 0.05
    loss_bad: float = 0.7
    bad_share: float = 0.2  # long-run share of time a link spends in the bad state
    burst_s: float = 3.0  # mean duration of a bad state
    interval_range: tuple[float, float] = (0.9, 1.3)
    heading_turn_s: float = 40.0  # a standing person turns round about this often
    min_distance_m: float = 0.5
    features: int = 64  # random Fourier features per receiver field
    bad_rx: tuple[tuple[int, float], ...] = ()  # (receiver index, dB added to its gain): a miscalibrated one
    deaf_rx: tuple[tuple[int, float], ...] = ()  # (receiver index, floor dBm): a deaf one

    @classmethod
    def like(cls, shadowing_db: float, loss: float, **more: Any) -> AltRadioParams:
        """Scaled to a benchmark cell: σ sets the spatial and body parts, `loss` the mean loss."""
        bad = min(max(loss, 0.0), 0.6)
        return cls(spatial_db=0.7 * shadowing_db, body_db=0.8 * shadowing_db, bad_share=bad / 0.7 if bad else 0.0,
                   **more)


class AltRadioChannel:
    """Stateful alternative channel between T transmitters and R receivers (same API as RadioChannel)."""

    def __init__(self, params: AltRadioParams, rx_positions: F64, rx_offsets: F64, n_tx: int,
                 rng: np.random.Generator, *, n_bands: int | None = None) -> None:
        self.alt = params
        self.rx_pos = np.asarray(rx_positions, dtype=np.float64).reshape(-1, 2)
        n_rx = len(self.rx_pos)
        self._rng = rng
        self.exponent = float(rng.uniform(*params.exponent_range))
        e = params.rx_gain_error_db
        self.rx_gain = -np.asarray(rx_offsets, dtype=np.float64) + rng.uniform(-e, e, n_rx)
        self.rx_floor = rng.uniform(*params.floor_range_dbm, n_rx)
        apply_bad_receivers(self.rx_gain, self.rx_floor, params.bad_rx, params.deaf_rx)
        self.tx_power_err = rng.uniform(-params.power_error_db, params.power_error_db, n_tx)
        # Only bands have bodies (and headings); beacons are fixed devices.
        self.n_bands = n_tx if n_bands is None else n_bands
        self._heading = rng.uniform(0, 2 * math.pi, n_tx)
        self._last_pos = np.full((n_tx, 2), np.nan)
        self._last_ts = np.zeros(n_tx)
        self._bad = rng.random((n_tx, n_rx)) < params.bad_share
        self.interval_factor = rng.uniform(*params.interval_range, n_tx)
        # Random Fourier features of a 2-D field with covariance exp(-|Δx|/dc): k = g / (dc·|w|).
        m = params.features
        g = rng.normal(0, 1, (n_rx, m, 2))
        w = np.abs(rng.normal(0, 1, (n_rx, m, 1))) + 1e-6
        self._k = g / (params.decorrelation_m * w)
        self._phi = rng.uniform(0, 2 * math.pi, (n_rx, m))
        mean_loss = params.loss_good * (1 - params.bad_share) + params.loss_bad * params.bad_share
        total = math.sqrt(params.spatial_db**2 + (params.body_db / 2) ** 2 / 2 + 3.0**2)
        slow = params.spatial_db**2 + (params.body_db / 2) ** 2 / 2
        self.p = RadioParams(path_loss_exponent=self.exponent, shadowing_db=total, slow_fraction=slow / total**2,
                             base_loss=mean_loss, loss_knee_dbm=float(self.rx_floor.mean()) + 2.0,
                             loss_width_db=params.floor_width_db, rx_gain_sigma_db=e / math.sqrt(3),
                             band_power_sigma_db=params.power_error_db / math.sqrt(3),
                             min_distance_m=params.min_distance_m)

    def spatial(self, pos: F64) -> F64:
        """(K, R) location-dependent shadowing (dB) of transmitters at `pos` (K, 2), per receiver."""
        arg = np.einsum("rmi,ki->krm", self._k, pos) + self._phi[None, :, :]
        return np.asarray(self.alt.spatial_db * math.sqrt(2.0 / self.alt.features) * np.cos(arg).sum(axis=2))

    def mean_rssi(self, tx_idx: NDArray[np.int64], measured_power: F64, pos: F64) -> F64:
        """(K, R) RSSI without fading, body or bursts: path loss with the true exponent and the spatial shadow."""
        d = np.maximum(np.linalg.norm(pos[:, None, :] - self.rx_pos[None, :, :], axis=2), self.alt.min_distance_m)
        p1m = measured_power + self.tx_power_err[tx_idx]
        return np.asarray(p1m[:, None] + self.rx_gain[None, :] - 10.0 * self.exponent * np.log10(d)
                          + self.spatial(pos))

    def _body(self, tx_idx: NDArray[np.int64], ts: F64, pos: F64) -> F64:
        """(K, R) body loss: the receiver behind the wearer loses up to body_db."""
        prev, dt = self._last_pos[tx_idx], ts - self._last_ts[tx_idx]
        step = pos - np.where(np.isnan(prev), pos, prev)
        moved = np.hypot(step[:, 0], step[:, 1]) > 0.2
        head = self._heading[tx_idx]
        head = np.where(moved, np.arctan2(step[:, 1], step[:, 0]), head)
        turn = (~moved) & (self._rng.random(len(tx_idx)) < np.clip(dt / self.alt.heading_turn_s, 0, 1))
        head = np.where(turn, self._rng.uniform(0, 2 * math.pi, len(tx_idx)), head)
        self._heading[tx_idx] = head
        self._last_pos[tx_idx] = pos
        self._last_ts[tx_idx] = ts
        to_rx = self.rx_pos[None, :, :] - pos[:, None, :]
        ang = np.arctan2(to_rx[..., 1], to_rx[..., 0]) - head[:, None]
        body = self.alt.body_db * (1.0 - np.cos(ang)) / 2.0
        return np.where((tx_idx < self.n_bands)[:, None], body, 0.0)

    def _fading(self, d: F64) -> F64:
        """(K, R) Rician power fading in dB (unit mean power), K falling with distance."""
        k = self.alt.rician_k_near * np.exp(-d / self.alt.rician_k_scale_m)
        los = np.sqrt(k / (k + 1.0))
        scat = np.sqrt(1.0 / (2.0 * (k + 1.0)))
        re = los + scat * self._rng.normal(0, 1, d.shape)
        im = scat * self._rng.normal(0, 1, d.shape)
        return np.asarray(10.0 * np.log10(np.maximum(re**2 + im**2, 1e-6)))

    def _bursts(self, tx_idx: NDArray[np.int64], dt: F64) -> NDArray[np.bool_]:
        """Advance each link's Gilbert–Elliott state by dt; return the (K, R) bad-state mask."""
        a = self.alt
        if a.bad_share <= 0:
            return np.zeros((len(tx_idx), self._bad.shape[1]), dtype=bool)
        leave_bad = 1.0 - np.exp(-dt / a.burst_s)
        enter_bad = 1.0 - np.exp(-dt * a.bad_share / (a.burst_s * max(1.0 - a.bad_share, 1e-3)))
        u = self._rng.random(self._bad[tx_idx].shape)
        bad = self._bad[tx_idx]
        bad = np.where(bad, u >= leave_bad[:, None], u < enter_bad[:, None])
        self._bad[tx_idx] = bad
        return np.asarray(bad)

    def transmit(self, tx_idx: NDArray[np.int64], ts: F64, measured_power: F64,
                 pos: F64) -> tuple[F64, NDArray[np.bool_]]:
        """Sample one advert per row: (K, R) RSSI and a (K, R) received mask. `tx_idx` must be unique."""
        dt = np.clip(ts - self._last_ts[tx_idx], 0.0, 60.0)
        d = np.maximum(np.linalg.norm(pos[:, None, :] - self.rx_pos[None, :, :], axis=2), self.alt.min_distance_m)
        bad = self._bursts(tx_idx, dt)
        rssi = self.mean_rssi(tx_idx, measured_power, pos) - self._body(tx_idx, ts, pos) + self._fading(d)
        a = self.alt
        p_ok = np.where(bad, 1.0 - a.loss_bad, 1.0 - a.loss_good) / (
            1.0 + np.exp(-(rssi - self.rx_floor[None, :] - 2.0) / a.floor_width_db))
        ok = (self._rng.random(rssi.shape) < p_ok) & (rssi >= self.rx_floor[None, :])
        return rssi, ok
