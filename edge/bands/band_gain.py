"""Each band's transmit gain, learned online from its own confidently-inside windows.

A band's 1 m power differs from its advertised `measured_power` by a fixed hardware error (±1.5 to
±3 dB). The window test marginalises the gain over a Gaussian prior N(b̂, σ_b²) per band; this
module moves that prior as evidence comes in. The guard: it learns only from windows in which
the band is confidently inside (the caller decides: strong inside-vs-outside evidence and a fix
well inside), at most once per `every_s` (overlapping windows share their shadowing), with each
window's information discounted by `correlation` (position and gain trade off within a window).
An escape is therefore never learned away: outside windows do not update, and the prior never
narrows below `min_sd_db` nor moves more than `max_abs_db` from the advertised power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GainParams:
    """Prior and guard of the band-gain learner."""

    prior_sd_db: float = 2.0
    min_sd_db: float = 0.8
    max_abs_db: float = 6.0
    every_s: float = 20.0
    correlation: float = 3.0  # each window's information counts this many times less
    # Off by default: measured, the learned gain drifted by up to +2.7 dB (a band whose true error was
    # -0.9 dB) while the calibrated exponent was 0.25 low, and that pushed a fence stander outside
    # (docs/bands.md, "Band gain learning"). The prior N(0, prior_sd_db²) is then used as is.
    learn: bool = False


class BandGains:
    """Per band: gain offset b̂ (dB added to measured_power) and its standard deviation."""

    def __init__(self, n_bands: int, params: GainParams | None = None) -> None:
        self.p = params or GainParams()
        self.mean = np.zeros(n_bands)
        self.prec = np.full(n_bands, 1.0 / self.p.prior_sd_db**2)
        self.updates = np.zeros(n_bands, dtype=np.int64)
        self._last = np.full(n_bands, -math.inf)

    def sd(self, rows: NDArray[np.int64]) -> F64:
        """Prior standard deviation (dB) of bands `rows`."""
        return np.asarray(1.0 / np.sqrt(self.prec[rows]))

    def update(self, band: int, now: float, post_mean: float, post_var: float) -> bool:
        """Fold one confidently-inside window's posterior (mean relative to b̂, variance); True if used.

        The window's posterior already contains the prior; its likelihood part is recovered by
        subtracting the prior precision, then discounted and added.
        """
        if (not self.p.learn or now - self._last[band] < self.p.every_s or not (post_var > 0.0)
                or not math.isfinite(post_mean)):
            return False
        prior = float(self.prec[band])
        lik_prec = 1.0 / post_var - prior
        if lik_prec <= 1e-6:
            return False
        lik_mean = post_mean * (1.0 / post_var) / lik_prec  # relative to b̂
        w = lik_prec / self.p.correlation
        cap = 1.0 / self.p.min_sd_db**2
        new_prec = min(prior + w, cap)
        step = lik_mean * w / (prior + w)
        self.mean[band] = float(np.clip(self.mean[band] + step, -self.p.max_abs_db, self.p.max_abs_db))
        self.prec[band] = new_prec
        self.updates[band] += 1
        self._last[band] = now
        return True
