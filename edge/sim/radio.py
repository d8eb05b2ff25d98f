"""The simulator's radio channel: log-distance path loss, log-normal shadowing, receiver gains, loss.

RSSI(dBm) = P1m(band) + gain(rx) - 10·n·log10(d) + slow(link) + fast(sample)

* P1m is the band's true 1 m power: its advertised `measured_power` plus a per-band error
  (bands are not calibrated individually).
* gain(rx) is the receiver's hardware gain: minus its configured `rssi_offset` (the offset is
  what the site config says to ADD to its reports), plus a hidden per-receiver deviation
  that the tracker must learn from beacons.
* shadowing is log-normal (Gaussian in dB) with total σ = `shadowing_db`, split into a slow,
  per-link AR(1) part (bodies, walls; correlated over seconds) and a fast per-packet part.
* A packet is lost with a base probability, more often as the signal nears the receiver's
  sensitivity (so loss grows with distance), and never received below -100 dBm.
* Bad receivers for robustness benchmarks (off by default): `bad_rx` adds a gain error to chosen
  receivers (one that reads 4-6 dB low), `deaf_rx` moves a receiver's floor up (hears nothing below
  -85 dBm; its loss curve moves with it). `rx_gain_uniform_db` / `band_power_uniform_db` draw the
  hidden gains uniformly in ±value instead of from a normal (the breach benchmark's "±2 dB").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SENSITIVITY_DBM = -100.0


@dataclass(frozen=True, slots=True)
class RadioParams:
    """Channel parameters. Defaults come from the site's `radio:` block where one exists."""

    path_loss_exponent: float = 2.7
    shadowing_db: float = 6.0
    slow_fraction: float = 0.5  # share of the shadowing variance that is slow (per link, AR(1))
    slow_tau_s: float = 8.0
    base_loss: float = 0.1  # loss probability far above sensitivity (collisions, scan gaps)
    loss_knee_dbm: float = -96.0  # half the packets are lost this close to sensitivity
    loss_width_db: float = 2.0
    rx_gain_sigma_db: float = 3.0  # hidden receiver gain deviation from its configured offset
    band_power_sigma_db: float = 1.5  # true 1 m power vs the advertised measured_power
    min_distance_m: float = 0.5
    rx_gain_uniform_db: float | None = None  # hidden receiver gains uniform in ±value (None: normal, σ above)
    band_power_uniform_db: float | None = None  # band powers uniform in ±value (None: normal, σ above)
    bad_rx: tuple[tuple[int, float], ...] = ()  # (receiver index, dB added to its gain after the draw)
    deaf_rx: tuple[tuple[int, float], ...] = ()  # (receiver index, its floor in dBm: hears nothing below)


class RadioChannel:
    """Stateful channel between T transmitters and R receivers (slow shadowing evolves in time)."""

    def __init__(
        self,
        params: RadioParams,
        rx_positions: NDArray[np.float64],
        rx_offsets: NDArray[np.float64],
        n_tx: int,
        rng: np.random.Generator,
    ) -> None:
        self.p = params
        self.rx_pos = np.asarray(rx_positions, dtype=np.float64).reshape(-1, 2)
        n_rx = len(self.rx_pos)
        g, b = params.rx_gain_uniform_db, params.band_power_uniform_db
        dev = rng.normal(0, params.rx_gain_sigma_db, n_rx) if g is None else rng.uniform(-g, g, n_rx)
        self.rx_gain = -np.asarray(rx_offsets, dtype=np.float64) + dev
        self.tx_power_err = rng.normal(0, params.band_power_sigma_db, n_tx) if b is None else rng.uniform(-b, b, n_tx)
        self.rx_floor = np.full(n_rx, SENSITIVITY_DBM)
        apply_bad_receivers(self.rx_gain, self.rx_floor, params.bad_rx, params.deaf_rx)
        # A deaf receiver's whole hearing curve moves up with its floor.
        self.rx_knee = params.loss_knee_dbm + (self.rx_floor - SENSITIVITY_DBM)
        var = params.shadowing_db**2
        self._sigma_slow = math.sqrt(var * params.slow_fraction)
        self._sigma_fast = math.sqrt(var * (1.0 - params.slow_fraction))
        self._slow = rng.normal(0, self._sigma_slow, (n_tx, n_rx)) if n_rx else np.zeros((n_tx, 0))
        self._slow_ts = np.zeros(n_tx)
        self._rng = rng

    def mean_rssi(self, tx_idx: NDArray[np.int64], measured_power: NDArray[np.float64],
                  pos: NDArray[np.float64]) -> NDArray[np.float64]:
        """(K, R) expected RSSI (no shadowing) for K transmissions at positions `pos`."""
        d = np.linalg.norm(pos[:, None, :] - self.rx_pos[None, :, :], axis=2)
        d = np.maximum(d, self.p.min_distance_m)
        p1m = measured_power + self.tx_power_err[tx_idx]
        return np.asarray(p1m[:, None] + self.rx_gain[None, :] - 10.0 * self.p.path_loss_exponent * np.log10(d))

    def transmit(
        self,
        tx_idx: NDArray[np.int64],
        ts: NDArray[np.float64],
        measured_power: NDArray[np.float64],
        pos: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Sample one advert per row: (K, R) RSSI and a (K, R) received mask. `tx_idx` must be unique."""
        mean = self.mean_rssi(tx_idx, measured_power, pos)
        self._evolve_slow(tx_idx, ts)
        rssi = mean + self._slow[tx_idx] + self._rng.normal(0, self._sigma_fast, mean.shape)
        p_ok = (1.0 - self.p.base_loss) / (1.0 + np.exp(-(rssi - self.rx_knee[None, :]) / self.p.loss_width_db))
        ok = (self._rng.random(mean.shape) < p_ok) & (rssi >= self.rx_floor[None, :])
        return rssi, ok

    def _evolve_slow(self, tx_idx: NDArray[np.int64], ts: NDArray[np.float64]) -> None:
        dt = np.maximum(ts - self._slow_ts[tx_idx], 0.0)
        rho = np.exp(-dt / self.p.slow_tau_s)[:, None]
        innov = self._rng.normal(0, 1.0, (len(tx_idx), self._slow.shape[1]))
        self._slow[tx_idx] = rho * self._slow[tx_idx] + np.sqrt(1.0 - rho**2) * self._sigma_slow * innov
        self._slow_ts[tx_idx] = ts


def apply_bad_receivers(gain: NDArray[np.float64], floor: NDArray[np.float64], bad: tuple[tuple[int, float], ...],
                        deaf: tuple[tuple[int, float], ...]) -> None:
    """Add `bad` gain errors and raise `deaf` floors in place (indices checked, values finite)."""
    for i, v in bad:
        if not 0 <= i < len(gain) or not math.isfinite(v):
            raise ValueError(f"bad_rx: receiver index {i} / gain error {v} out of range")
        gain[i] += v
    for i, v in deaf:
        if not 0 <= i < len(floor) or not math.isfinite(v):
            raise ValueError(f"deaf_rx: receiver index {i} / floor {v} out of range")
        floor[i] = max(floor[i], v)
