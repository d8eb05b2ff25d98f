"""The site's path-loss exponent, learned from the bands' own windows (for the window breach test).

The beacons' calibration reads the exponent low: its pairs are averaged levels of the adverts that
were heard, and a long link is heard only on its up-fades, so its level reads high and the slope
flattens (2.2 for a true 2.4 on the alt radio, 2.46-2.53 for 2.7 on the default one). A low exponent
inflates every distance, and "25-35 m outside" then explains a person standing just inside a fence
better than inside does (docs/bands.md, "Exponent from the bands").

The window test's own likelihood has no such bias: it counts every advert a listening receiver
missed through that receiver's hearing curve. For a band confidently inside, the best inside
log-likelihood ℓ(n) (position and band gain free) is evaluated at n̂ - h, n̂, n̂ + h; a parabola
through the three gives that window's estimate and its information. They are pooled with the
beacons' estimate as a prior. The guard is the same as for band gains: only confidently-inside
windows, one per band per `every_s`, information discounted for correlation, and forgotten over
`memory_s`; the exponent is common to the whole site, so one escapee cannot move it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ExponentParams:
    """Step, guard and memory of the exponent learner."""

    # Off by default: measured, it learned 2.68-2.77 on the alt radio (true 2.26-2.65; the dB-domain
    # slope there is steeper than the power law because fading deepens with distance) and the window
    # test then caught 0 of 14 compound escapes (docs/bands.md, "Exponent from the bands").
    learn: bool = False
    step: float = 0.15  # h: ℓ is evaluated at n̂ ± h
    every_s: float = 20.0  # one window per band per this (overlapping windows share their shadowing)
    max_rows: int = 8  # windows used per tick at most (the cost: two inside-only tests per row)
    correlation: float = 3.0  # each window's information counts this many times less
    memory_s: float = 600.0  # information forgotten with this time constant (a site's environment changes)
    beacon_sd: float = 0.3  # the beacons' estimate as a prior: it is biased, so loose
    max_shift: float = 1.0  # never further than this from the beacons' estimate
    lo: float = 1.6
    hi: float = 4.5


@dataclass(frozen=True, slots=True)
class ExponentState:
    """The pooled windows' information and information-weighted estimate, for a restart."""

    info: float
    info_n: float
    windows: int


class ExponentLearner:
    """Pooled quadratic approximations of ℓ(n) from confidently-inside windows."""

    def __init__(self, params: ExponentParams | None = None) -> None:
        self.p = params or ExponentParams()
        self.info = 0.0  # Σ information (per unit n²), discounted
        self.info_n = 0.0  # Σ information × window estimate
        self.windows = 0
        self._t = -math.inf

    def value(self, beacon_n: float) -> float:
        """The exponent for the test: the bands' estimate pooled with the beacons'."""
        if not self.p.learn or self.info <= 0.0:
            return beacon_n
        prior = 1.0 / self.p.beacon_sd**2
        n = (prior * beacon_n + self.info_n) / (prior + self.info)
        n = min(max(n, beacon_n - self.p.max_shift), beacon_n + self.p.max_shift)
        return float(min(max(n, self.p.lo), self.p.hi))

    def sd(self) -> float:
        """Standard deviation of the pooled estimate (prior included)."""
        return float(1.0 / math.sqrt(1.0 / self.p.beacon_sd**2 + max(self.info, 0.0)))

    def add(self, now: float, n: float, ll_lo: F64, ll_0: F64, ll_hi: F64) -> int:
        """Fold windows whose best inside log-likelihood is ll_lo/ll_0/ll_hi at n - h, n, n + h; how many were used."""
        if not self.p.learn:
            return 0
        h = self.p.step
        c2 = ll_hi + ll_lo - 2.0 * ll_0
        ok = np.isfinite(c2) & (c2 < -1e-9)
        if not ok.any():
            return 0
        c2 = c2[ok]
        info = -c2 / h**2
        # Vertex of the parabola, kept within 2h: beyond it the three points say little.
        x = np.clip(-h * (ll_hi[ok] - ll_lo[ok]) / (2.0 * c2), -2.0 * h, 2.0 * h)
        if math.isfinite(self._t):
            decay = math.exp(-max(now - self._t, 0.0) / self.p.memory_s)
            self.info *= decay
            self.info_n *= decay
        self._t = now
        w = info / self.p.correlation
        self.info += float(w.sum())
        self.info_n += float((w * (n + x)).sum())
        self.windows += int(ok.sum())
        return int(ok.sum())

    def snapshot(self) -> ExponentState:
        return ExponentState(self.info, self.info_n, self.windows)

    def restore(self, s: ExponentState) -> None:
        """Start from `s`, not discounted for the time the node was off (as `LossLearner.restore`)."""
        self.info, self.info_n, self.windows = max(float(s.info), 0.0), float(s.info_n), max(int(s.windows), 0)
        self._t = -math.inf
