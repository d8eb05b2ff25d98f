"""The site's own null: how inflated the window statistic is where the path-loss model misfits.

Under a model that fits, 2·ln LR of a band that is inside has a χ²-like upper tail: P(S > t) falls
as exp(-t/2) (Wilks), so the excess of the tail above any level has scale 2. Where the model is
wrong in a way that makes "far away" cheap (the alt radio: fading that deepens with distance and
truncation flatten the beacons' exponent, docs/bands.md "Why fence-standers breach on the alt
radio"), every weakly heard band near a fence reads as leaning outside and the tail stretches: the
statistic behaves like φ·χ² with φ > 1. φ is the quasi-likelihood dispersion of the test, and it
is measured here from the site's own bands, which are inside nearly all the time: one sample per
band per `every_s` of its long-window statistic, the tail between `tail_from` (0) and the cut c
(`cut_share` × threshold). Its scale β̂ is fitted as an exponential truncated to (0, c) from the share
P of the tail above c/2: P = q/(1+q) with q = exp(-c/2β), so β = c / (2·ln((1-P)/P)). Only three
comparisons of each statistic are needed (0, c/2, c), which the detector's decide mode settles
exactly without computing the statistic (`window_test.run_test`'s `decide`; `levels()`). The position
is two-dimensional, so under a fitting model the reference is χ²₂, whose tail is exactly exponential
with scale 2 (measured on the default radio, whose channel is the model's: 1.2-2.2). The detector
reports S/φ with φ = β̂/2 bounded to [1, `max_scale`], i.e. the threshold scales by φ, so a site
whose model fits (φ ≈ 1) keeps today's recall and one whose model misfits stops paying false alarms
for it.

Guards (an escape wave must not raise the threshold it is judged by):
- the fit counts how many samples are in the upper half of the tail, not how far they reach;
- only the tail below the cut (half the threshold, where the detector already treats a band as hot)
  is fitted, as a truncated exponential (so the cut does not bias β̂): an escapee's statistics above
  it count nothing, however high, and within it only which half a sample is in counts;
- one band contributes at most one sample per `every_s`, so an escapee feeds at most the one or
  two samples of its climb below the cut (tried and removed: barring a band for 10 min once it
  reached the threshold; on a site whose fence-standers all cross it, that bars exactly the
  bands that show the misfit and φ fails open to 1, see tests/bands/test_empirical_null.py);
- φ is bounded to [1, `max_scale`], moves at most `max_step` per update, and is 1 until
  `min_tail` samples are in the tail (start-up);
- the count of samples, the tail's size and φ are reported (`state()`) for telemetry and benches.

A tail far flatter than any bounded φ can absorb (β̂ ≥ `misfit_beta`, ten times the reference; measured
89-1000 on the alt radio's L-wing at σ 8 dB while it raised false breaches, 1.2-2.2 on the default radio,
5.5 on the alt demo) is reported as `misfit`, with hysteresis (cleared below `misfit_clear_beta`), for
node telemetry and `doctor`: the threshold cannot fix that site, its survey can (docs/bands.md, "The first
beacon solve waits ~50 s"). Letting φ rise further on such sites was measured and not kept (same section).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class NullParams:
    """The empirical null's sampling, tail and bounds."""

    learn: bool = True
    every_s: float = 20.0  # one sample per band per this: overlapping windows share their shadowing
    memory_s: float = 1800.0  # samples older than this are forgotten
    tail_from: float = 0.0  # the tail: statistics above this (a band that leans outside at all)
    cut_share: float = 0.5  # ... and below this share of the threshold (above it: not fitted)
    min_tail: int = 60  # φ stays 1 until this many samples are in the tail
    reference_scale: float = 2.0  # the tail's scale when the model fits: χ² (Wilks), exp(-t/2)
    # φ at most this: 13 × 1.33 = 17.3, the highest threshold the ideal observer needs at the budget pooled over
    # either radio's layouts and σ (16.25-17.25, docs/history/ideal-bound-2026-12-05.md). The bulk's scale
    # says how badly the model fits, not how far the extreme tail reaches: with 2.0, φ read 1.8-2.0 on the
    # alt demo (threshold 23-26) and its recall fell 10 -> 3/16, far below the bound's 23-25/32.
    max_scale: float = 1.33
    # β̂ is taken from P less this many of its binomial standard errors, so the threshold rises only where the
    # tail is wider than sampling noise explains.
    guard_se: float = 1.0
    max_step: float = 0.05  # φ moves at most this much per update (one update per `update_every_s`)
    update_every_s: float = 10.0
    misfit_beta: float = 20.0  # β̂ at or above this: the site's model misfits beyond what φ absorbs (reported)
    misfit_clear_beta: float = 10.0  # ... and the report clears below this (the alt demo and σ 6 L-wing read 5.4-7.4)


@dataclass(frozen=True, slots=True)
class NullState:
    """φ, the tail's scale β̂ (NaN: not fitted) and the misfit report, for a restart. The samples are not kept:
    they are statistics of the bands where they stood; the restored φ holds until `min_tail` new ones are in."""

    scale: float
    beta: float
    misfit: bool


class EmpiricalNull:
    """Running estimate of the window statistic's dispersion φ over the site's bands."""

    def __init__(self, n_bands: int, threshold: float, params: NullParams | None = None) -> None:
        self.p = params or NullParams()
        self.threshold = threshold
        self._last = np.full(n_bands, -math.inf)
        self._t: deque[float] = deque()
        self._s: deque[float] = deque()
        self._next = -math.inf
        self.scale = 1.0  # φ
        self.beta = math.nan  # the tail's scale β̂ (φ wants β̂ / reference_scale)
        self.samples = 0  # in memory
        self.tail = 0
        self.above_cut = 0  # samples in memory above the cut (not fitted)
        self.misfit = False

    def add(self, now: float, rows: I64, lr: F64) -> None:
        """This tick's long-window statistics (raw, before scaling) of the bands tested."""
        if not self.p.learn or not len(rows):
            return
        ok = np.isfinite(lr) & (now - self._last[rows] >= self.p.every_s)
        for v in lr[ok].tolist():
            self._t.append(now)
            self._s.append(float(v))
        self._last[rows[ok]] = now
        if now >= self._next:
            self._next = now + self.p.update_every_s
            self._update(now)

    def _update(self, now: float) -> None:
        while self._t and self._t[0] < now - self.p.memory_s:
            self._t.popleft()
            self._s.popleft()
        s = np.fromiter(self._s, dtype=np.float64, count=len(self._s))
        lo, mid, cut = self.levels()
        tail = (s > lo) & (s < cut)
        n = int(tail.sum())
        self.samples, self.tail, self.above_cut = len(s), n, int((s >= cut).sum())
        if n < self.p.min_tail:
            return
        share = float((tail & (s > mid)).sum()) / n
        self.beta = grouped_scale(share, cut - lo)
        if self.beta >= self.p.misfit_beta:
            self.misfit = True
        elif self.beta < self.p.misfit_clear_beta:
            self.misfit = False
        beta = grouped_scale(share - self.p.guard_se * math.sqrt(share * (1.0 - share) / n), cut - lo)
        want = min(max(beta / self.p.reference_scale, 1.0), self.p.max_scale)
        self.scale += min(max(want - self.scale, -self.p.max_step), self.p.max_step)

    def levels(self) -> tuple[float, float, float]:
        """The raw statistic's comparisons the fit needs (the detector's decide mode settles them exactly):
        the tail's start, the middle of the fitted range and the cut."""
        lo, cut = self.p.tail_from, self.threshold * self.p.cut_share
        return lo, (lo + cut) / 2.0, cut

    def state(self) -> dict[str, float | int]:
        """φ, β̂, the samples in memory, those in the fitted tail, those above the cut and `misfit` (1: the
        model does not fit this site's own bands; telemetry, `doctor`, benches)."""
        beta = round(self.beta, 3) if math.isfinite(self.beta) else 0.0  # 0: not fitted yet (telemetry takes no NaN)
        return {"scale": round(self.scale, 3), "beta": beta, "samples": self.samples, "tail": self.tail,
                "above_cut": self.above_cut, "misfit": int(self.misfit)}

    def snapshot(self) -> NullState:
        return NullState(self.scale, self.beta, self.misfit)

    def restore(self, s: NullState) -> None:
        """Start from `s` (φ bounded as the learner bounds it)."""
        scale = float(s.scale)
        self.scale = min(max(scale, 1.0), self.p.max_scale) if math.isfinite(scale) else 1.0
        self.beta = float(s.beta) if math.isfinite(s.beta) and s.beta >= 0.0 else math.nan
        self.misfit = bool(s.misfit) and self.p.learn


def grouped_scale(share_upper: float, width: float) -> float:
    """β of an exponential truncated to (0, width) with `share_upper` of its mass in the upper half.

    P = q/(1+q), q = exp(-width/2β): β = width / (2·ln((1-P)/P)). P → 1/2 is a flat tail (β → ∞, returned
    as 1e3); P → 0 a tail that ends at once (β → 0)."""
    if share_upper <= 0.0:
        return 0.0
    if share_upper >= 0.5:
        return 1e3
    return min(width / (2.0 * math.log((1.0 - share_upper) / share_upper)), 1e3)
