"""Self-calibration from reference beacons: per-receiver gain bias and the site's path-loss exponent.

Beacons stand at surveyed positions, so every beacon × receiver RSSI is a measurement of
``g_r - 10·n·log10(d)`` (after the beacon's own measured power). The filtered RSSI per pair is
averaged slowly (minutes) and a ridge least-squares solve gives the receiver biases g_r and the
exponent n, with priors (g_r ≈ 0 ± the site's `radio.receiver_gain_sd_db`, n ≈ configured ± 0.4) so a
site with one beacon, or a pair near the sensitivity floor, cannot drag the model somewhere silly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CalibrationState:
    """The beacon pairs' averages and the last solve, for a restart (beacons and receivers in site order)."""

    rx_bias: F64  # (R,)
    exponent: float
    cov: F64  # (R + 1, R + 1)
    updates: int
    mean: F64  # (B, R) averaged level less the beacon's power
    level: F64  # (B, R) averaged level
    count: F64  # (B, R) rounds averaged


class Calibration:
    """Running estimate of receiver biases (dB to add to offset-corrected RSSI) and the exponent."""

    def __init__(self, rx_pos: F64, beacon_idx: NDArray[np.int64], beacon_pos: F64, exponent: float, *,
                 bias_prior_db: float, alpha: float = 0.1, floor_dbm: float = -95.0,
                 exponent_prior: float = 0.4, pair_sigma_db: float = 3.0, min_updates: int = 3,
                 first_solve_updates: int = 6, pair_error_db: float | None = None) -> None:
        self.rx_pos = rx_pos
        self.beacon_idx = beacon_idx
        self.exponent0 = exponent
        self.exponent = exponent
        self.rx_bias = np.zeros(len(rx_pos))
        n_b, n_r = len(beacon_idx), len(rx_pos)
        d = np.linalg.norm(beacon_pos[:, None, :] - rx_pos[None, :, :], axis=2) if n_b else np.zeros((0, n_r))
        self.log_d = np.log10(np.maximum(d, 0.5))
        self.mean = np.zeros((n_b, n_r))
        self.count = np.zeros((n_b, n_r))
        self.level = np.zeros((n_b, n_r))  # averaged RSSI itself, to skip pairs near the floor
        self.alpha = alpha
        self.floor_dbm = floor_dbm
        self.bias_prior_db = bias_prior_db
        self.exponent_prior = exponent_prior
        self.pair_sigma_db = pair_sigma_db
        # What one averaged beacon pair is really worth: its own position's shadow never averages out,
        # so the covariance uses the site's slow shadowing rather than the solve's weighting σ.
        self.pair_error_db = max(pair_sigma_db, pair_error_db or 0.0)
        self.min_updates = min_updates
        # No solve at all before this many rounds (≈50 s at the tracker's pace). After 3 rounds only the
        # strongest pairs clear `min_updates`, and their averages still carry the short-term fading: on the
        # alt radio's L-wing at σ 8 dB one such first solve read a receiver's gain 2.00 ± 0.19 dB for a true
        # 2.45 and pulled its block outside (10 false breaches in 10 s; docs/bands.md, "The first beacon solve
        # waits ~50 s").
        self.first_solve_updates = first_solve_updates
        self.updates = 0
        # Posterior covariance of (g_0..g_{R-1}, n); the prior alone until the first solve.
        self.cov = np.diag(np.r_[np.full(n_r, bias_prior_db**2), exponent_prior**2])

    def update(self, idx: NDArray[np.int64], med: F64, power: F64) -> None:
        """Fold this tick's filtered RSSI of any beacons among `idx` into the averages and re-solve."""
        if len(self.beacon_idx) == 0:
            return
        pos = {int(b): j for j, b in enumerate(self.beacon_idx)}
        for row, band in enumerate(idx.tolist()):
            j = pos.get(band)
            if j is None:
                continue
            y = med[row] - power[row]
            ok = ~np.isnan(y)
            first = ok & (self.count[j] == 0)
            self.mean[j, first] = y[first]
            self.level[j, first] = med[row][first]
            rest = ok & ~first
            a = np.maximum(self.alpha, 1.0 / (self.count[j, rest] + 1.0))
            self.mean[j, rest] += a * (y[rest] - self.mean[j, rest])
            self.level[j, rest] += a * (med[row][rest] - self.level[j, rest])
            self.count[j, ok] += 1
        self.updates += 1
        if self.updates >= self.first_solve_updates:
            self._solve()

    def _solve(self) -> None:
        use = (self.count >= self.min_updates) & (self.level > self.floor_dbm)
        if not use.any():
            return
        n_r = len(self.rx_pos)
        jj, rr = np.nonzero(use)
        # Unknowns: g_0..g_{R-1}, n. Rows: pairs, then priors.
        rows = len(jj) + n_r + 1
        a = np.zeros((rows, n_r + 1))
        b = np.zeros(rows)
        w = 1.0 / self.pair_sigma_db
        a[np.arange(len(jj)), rr] = w
        a[np.arange(len(jj)), n_r] = -10.0 * self.log_d[jj, rr] * w
        b[: len(jj)] = self.mean[jj, rr] * w
        a[len(jj) + np.arange(n_r), np.arange(n_r)] = 1.0 / self.bias_prior_db
        a[-1, n_r] = 1.0 / self.exponent_prior
        b[-1] = self.exponent0 / self.exponent_prior
        sol, *_ = np.linalg.lstsq(a, b, rcond=None)
        n = float(sol[n_r])
        if math.isfinite(n):
            self.exponent = min(max(n, 1.5), 5.0)
            self.rx_bias = -np.clip(sol[:n_r], -15.0, 15.0)
            # Rows whitened by their real σ (pairs: `pair_error_db`; priors) give the posterior
            # covariance (AᵀA)⁻¹. Pairs are taken as independent; a beacon's shadow at one receiver
            # is, but the exponent couples them (see bands.md).
            aw = a.copy()
            aw[: len(jj)] *= self.pair_sigma_db / self.pair_error_db
            with np.errstate(all="ignore"):
                cov = np.linalg.pinv(aw.T @ aw)
            if np.isfinite(cov).all():
                self.cov = cov

    def link_var_db2(self) -> F64:
        """(R,) variance (dB²) of each receiver's gain bias given the exponent: Var(g_r | n).

        The exponent's own uncertainty is common to every link of a band and mostly cancels between
        the inside and outside explanations; adding it per receiver as if independent would blunt
        every test on a site with few beacons. A receiver no beacon pair pins keeps the prior's sd.
        """
        n_r = len(self.rx_pos)
        var_n = max(float(self.cov[n_r, n_r]), 1e-12)
        var = np.diag(self.cov)[:n_r] - self.cov[:n_r, n_r] ** 2 / var_n
        return np.asarray(np.maximum(var, 0.0))

    def snapshot(self) -> CalibrationState:
        return CalibrationState(self.rx_bias.copy(), self.exponent, self.cov.copy(), self.updates,
                                self.mean.copy(), self.level.copy(), self.count.copy())

    def restore(self, s: CalibrationState) -> None:
        """Start from `s` (the same beacons and receivers): the pairs' averages go on from where they were, so the
        first solve needs no `first_solve_updates` rounds, and the last solve stands until the next."""
        n_r, n_b = len(self.rx_pos), len(self.beacon_idx)
        shapes = (s.rx_bias.shape, s.cov.shape, s.mean.shape, s.level.shape, s.count.shape)
        if shapes != ((n_r,), (n_r + 1, n_r + 1), (n_b, n_r), (n_b, n_r), (n_b, n_r)):
            raise ValueError(f"calibration state of shapes {shapes} for {n_b} beacons and {n_r} receivers")
        if not np.isfinite(s.cov).all() or (np.diag(s.cov) < 0.0).any():
            raise ValueError("calibration covariance is not finite or has a negative variance")
        self.rx_bias = np.clip(np.asarray(s.rx_bias, dtype=np.float64), -15.0, 15.0)
        self.exponent = min(max(float(s.exponent), 1.5), 5.0)
        self.cov = np.asarray(s.cov, dtype=np.float64).copy()
        self.updates = max(int(s.updates), 0)
        self.mean = np.asarray(s.mean, dtype=np.float64).copy()
        self.level = np.asarray(s.level, dtype=np.float64).copy()
        self.count = np.maximum(np.asarray(s.count, dtype=np.float64), 0.0)
