"""How fast the slow shadowing changes, measured from the beacons (issue 16: correlation modelled).

The window test holds a link's slow shadowing over the whole window: right for the part tied to the
place (a person standing still keeps it), too cautious for the part that changes with time (people
and doors moving about, a body turning). A window of W seconds holds 1 / f(W/τ) independent looks of a
slowly varying term with correlation time τ (f is the variance of an AR(1) process's window mean over
its variance, below), so holding it all counts a 40 s window with τ = 8 s as one look instead of three.

Beacons stand still at known places, so their links show exactly the time-varying part. Per strong
beacon link (well above the receiver's floor: no truncation), per pair of seconds ℓ apart,
D(ℓ) = E[(x(t+ℓ) - x(t))²] = 2σ_f² + 2σ_v²(1 - exp(-ℓ/τ)): the per-packet part σ_f² and the
time-varying slow part σ_v² with correlation time τ. Fitted over lags 1-32 s (least squares over a τ
grid, non-negative coefficients). A channel whose beacons show no time-varying part (a shadow tied to
the place) gives σ_v² ≈ 0: everything stays held, as before. Until `min_pairs` pairs are in, nothing
is split either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.bands.advert_bins import AdvertBins

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ClockParams:
    """Lags, fit grid and guards of the correlation-time estimate."""

    learn: bool = True
    lags: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
    taus: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0)
    above_floor_db: float = 10.0  # only links whose mean is this far above the receiver's floor
    min_pairs: int = 500  # pairs at the longest lag before the estimate is used
    min_var_db2: float = 4.0  # a time-varying slow variance below this is noise: hold everything
    max_blocks: int = 4


def window_looks(window_s: float, tau_s: float) -> float:
    """Independent looks of an AR(1) term (correlation time τ) in a window of W: 1 / f(W/τ),
    f(x) = 2/x - 2(1 - e^-x)/x², the variance of the window mean over the process variance."""
    if not math.isfinite(tau_s) or tau_s <= 0.0:
        return 1.0
    x = window_s / tau_s
    if x < 1e-3:
        return 1.0
    f = 2.0 / x - 2.0 * (1.0 - math.exp(-x)) / (x * x)
    return 1.0 / max(f, 1e-9)


@dataclass(frozen=True, slots=True)
class ClockState:
    """The beacon links' summed squared differences and pair counts per lag, and the fit, for a restart."""

    sum: F64
    pairs: F64
    tau: float  # inf: no time-varying part
    var_v: float


class ShadowClock:
    """Accumulates beacon-link level differences by lag and fits (σ_v², τ)."""

    def __init__(self, beacon_rows: I64, params: ClockParams | None = None) -> None:
        self.p = params or ClockParams()
        self.rows = np.asarray(beacon_rows, dtype=np.int64)
        n = len(self.p.lags)
        self.sum = np.zeros(n)
        self.pairs = np.zeros(n)
        self._done = -(2**62)  # pairs whose later second is at most this are counted
        self.tau = math.inf
        self.var_v = 0.0
        self.ready_at = math.inf  # when the estimate was first used (diagnostics)

    def add(self, bins: AdvertBins, now: float, raw_floor: F64) -> None:
        """Count the pairs of seconds completed since the last call (levels as the bins hold them)."""
        if not self.p.learn or not len(self.rows):
            return
        top = math.floor(now) - 1  # the last complete second
        secs = np.arange(top - bins.span + 1, top + 1, dtype=np.int64)
        slots = secs % bins.span
        ok = bins.sec[slots] == secs
        c = np.where(ok[:, None, None], bins.count[slots][:, self.rows], 0.0).astype(np.float64)
        t = np.where(ok[:, None, None], bins.total[slots][:, self.rows], 0.0)
        heard = c > 0
        x = np.where(heard, t / np.maximum(c, 1.0), np.nan)
        n_heard = heard.sum(axis=0)
        mean = np.where(n_heard > 0, np.where(heard, x, 0.0).sum(axis=0) / np.maximum(n_heard, 1), np.nan)
        strong = np.nan_to_num(mean, nan=-1e9) > (raw_floor[None, :] + self.p.above_floor_db)
        x = np.where(strong[None], x, np.nan)
        for j, lag in enumerate(self.p.lags):
            if lag >= len(secs):
                continue
            later = secs[lag:]
            new = later > self._done
            if not new.any():
                continue
            d = (x[lag:] - x[:-lag])[new]
            d = d[np.isfinite(d)]
            self.sum[j] += float((d * d).sum())
            self.pairs[j] += len(d)
        self._done = top
        if self.pairs[-1] >= self.p.min_pairs:
            self._fit()
            if self.var_v > 0.0 and not math.isfinite(self.ready_at):
                self.ready_at = now

    def _fit(self) -> None:
        lags = np.array(self.p.lags, dtype=np.float64)
        ok = self.pairs > 0
        dv = self.sum[ok] / self.pairs[ok]
        w = self.pairs[ok]
        lg = lags[ok]
        best = (float(np.sum(w * (dv - np.average(dv, weights=w)) ** 2)), math.inf, 0.0)  # τ = ∞: flat
        for tau in self.p.taus:
            g = 1.0 - np.exp(-lg / tau)
            a_mat = np.stack([np.ones_like(g), g], axis=1) * np.sqrt(w)[:, None]
            coef, *_ = np.linalg.lstsq(a_mat, dv * np.sqrt(w), rcond=None)
            if coef[0] < 0.0 or coef[1] < 0.0:
                continue
            sse = float(np.sum(w * (dv - coef[0] - coef[1] * g) ** 2))
            if sse < best[0]:
                best = (sse, tau, float(coef[1]) / 2.0)
        _sse, tau, var_v = best
        if var_v < self.p.min_var_db2:
            tau, var_v = math.inf, 0.0
        self.tau, self.var_v = tau, var_v

    def blocks(self, window_s: float) -> int:
        """Independent blocks a window of W seconds is split into (1 = held over the whole window)."""
        if self.var_v <= 0.0:
            return 1
        return int(min(max(round(window_looks(window_s, self.tau)), 1), self.p.max_blocks, max(int(window_s), 1)))

    def snapshot(self) -> ClockState:
        return ClockState(self.sum.copy(), self.pairs.copy(), self.tau, self.var_v)

    def restore(self, s: ClockState) -> None:
        """Start from `s` (the same lags). The seconds counted are not kept: the advert bins start empty."""
        if s.sum.shape != self.sum.shape or s.pairs.shape != self.pairs.shape:
            raise ValueError(f"shadow-clock state for {len(s.sum)} lags, this learner has {len(self.sum)}")
        self.sum = np.maximum(np.asarray(s.sum, dtype=np.float64), 0.0)
        self.pairs = np.maximum(np.asarray(s.pairs, dtype=np.float64), 0.0)
        ok = s.var_v >= self.p.min_var_db2 and s.tau > 0.0
        self.tau, self.var_v = (float(s.tau), float(s.var_v)) if ok else (math.inf, 0.0)
