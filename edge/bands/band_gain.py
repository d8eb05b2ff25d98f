"""Each band's transmit gain, learned online from where the band is, wherever that is.

A band's 1 m power differs from its advertised `measured_power` by a fixed hardware error (±1.5 to
±3 dB for good bands, ±6 dB or more for cheap ones). The window test marginalises the gain over a
Gaussian prior N(b̂, σ_b²) per band; this module moves that prior as evidence comes in.

The evidence is the band's **position-free** fit: for a few gains b on a fixed grid, the window's best
log-likelihood over every candidate position, inside the fence or out (`window_test.position_free`).
Where receivers on several sides hear a band, the pattern of levels fixes its position and the common
level its gain, so an escapee's gain is learned as well as a resident's: the gain cannot learn an escape
away, and a band whose power reads far off is learned too (learning only from windows the breach test
called confidently inside never reached a band 6 dB low: the test calls it outside).

Two things the fit cannot tell apart are kept out:

* **A place's static shadowing.** A person who stands in one place for an hour shows that place's
  shadowing, not the band's gain, however many windows are taken. The evidence is kept per place (cells
  of `place_m`): a cell holds the mean of its windows' curves, and the band's evidence is the sum over
  its cells (at most `max_places`, the oldest dropped), so only moving shows the gain.
* **What all bands share.** The calibrated exponent's bias, a body loss or the receivers' common error
  shift every band's fit alike (measured: −2.3 to −4.7 dB on the bench's runs). That part is left to the
  model it belongs to: each band learns its gain relative to the median of the learned bands' fits.

The estimate is the vertex and curvature of a parabola through the maximum of evidence + log prior and
its two neighbours; it never narrows below `min_sd_db` nor leaves ±`max_abs_db`. docs/bands.md, "Band
gains learned from the position-free fit".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
GRID_DB = np.arange(-12.0, 12.0 + 1e-9, 2.0)  # the gains the position-free fit is evaluated at
# The cell a restored band's evidence is kept under: no real place maps to it (coordinates stay within ±100 km).
_RESTORED = (-(2**40), -(2**40))
SMOOTH_DB = 1.0  # each grid point's gain is marginalised over N(b, SMOOTH_DB²): a smooth curve between points


@dataclass(frozen=True, slots=True)
class GainState:
    """What the learner knows of each band (dense rows) that outlives a restart: its gain, the gain's sd and the
    evidence curve over `GRID_DB`, without the places it came from (a band's places say where it was)."""

    mean: F64  # (N,)
    sd: F64  # (N,)
    updates: I64  # (N,) windows folded in; 0 = nothing known (cold)
    evidence: F64  # (N, G) the sum over places of their mean window curves
    moved: NDArray[np.bool_]  # (N,) evidence from two places or more (counts towards the shared part)
    shared_db: float


@dataclass(frozen=True, slots=True)
class GainParams:
    """Prior and learning of the band-gain learner."""

    prior_sd_db: float = 2.0
    # 1 dB, not lower: at 0.8 dB, before the exponent came from the censored beacon fit, the test lost the width
    # that absorbs what the model gets wrong for every band (the exponent's bias) and the null runs' false breaches
    # rose 2-5 fold. The narrow sd is used only while the beacons' misfit says the model fits
    # (`BeaconFitParams.misfit_max`).
    min_sd_db: float = 1.0
    max_abs_db: float = 8.0
    every_s: float = 20.0
    # Bands looked at per tick at most, those looked at longest ago first. Each look is the window test at every
    # gain of `GRID_DB` with the position free, ~5 ms of a core per band here: unbounded, a 500-band site's 25 looks
    # a tick tripled the tick (x86_64: 47 -> 143 ms p50, the live node 17.8 -> 28.2 % of a core). With 9, every
    # band up to ~180 is still looked at every `every_s`, and a 500-band site's every ~55 s.
    max_per_tick: int = 9
    # No look in the first minute of the test: the beacon solve, the floors and the exponent are still moving, and
    # a gain learned against them stays in the evidence (measured: 3 start-up false breaches at ±2 dB, 0 without).
    settle_s: float = 60.0
    min_links: int = 3  # receivers that heard the band in the window: fewer cannot fix its position
    place_m: float = 8.0
    max_places: int = 24
    temper: float = 3.0  # each place's curve counts this many times less (one window's curve is too sharp)
    shared_min_bands: int = 10  # bands with evidence from two places or more before any gain is learned
    # On with the censored beacon fit and its misfit gate, measured together against all three off (seed 16000,
    # 2,016 null band-h per radio): null false breaches default 3 -> 8, alt 9 -> 2; default σ <= 6 recall
    # 239 -> 245 of 256 (233 -> 249 after 30 minutes of residence); alt recall 166 -> 150 of 384 (docs/bands.md,
    # "The censored fit, the learner and the misfit gate turned on"). Alone, on the ±2 dB bench, it had raised the
    # alt radio's false breaches (null 87 -> 112): its narrower prior trusted the linear calibration's exponent bias.
    learn: bool = True
    # Evidence only from windows the test calls confidently inside, fitted over the band's own inside positions
    # (not position-free). Off by default: being measured (docs/bands.md, "Band gains learned from the
    # position-free fit", session 18) against what the position-free fit does to a fence-stander at σ 8.
    inside: bool = False
    # Where a look's evidence is kept: the 8 m cell of the band's tracker fixes averaged over this many seconds
    # (`PlaceTrack`); 0 = the cell of the position-free fit's best point, as before session 22. That point wanders
    # over tens of metres for a band that never moves, so a stander's looks fell in 4-15 cells, each counted as an
    # independent place with its own held shadow. Measured (seed 16000): default null 9 -> 4 false breaches in
    # 2,016 band-h, default recall 349 -> 340 of 384 (docs/bands.md, "Where the default null's fence-standers come
    # from").
    place_tau_s: float = 60.0


class PlaceTrack:
    """Each band's tracker fix averaged exponentially (one update a tick): where it is, not where one window's fit
    puts it. NaN until its first fix."""

    def __init__(self, n_bands: int) -> None:
        self.xy = np.full((n_bands, 2), np.nan)
        self._t = np.full(n_bands, np.nan)

    def update(self, now: float, rows: I64, xy: F64, tau_s: float) -> None:
        """Fold this tick's fixes `xy` (K, 2) of bands `rows` in, averaged over `tau_s`; non-finite fixes are
        skipped."""
        ok = np.isfinite(xy).all(axis=1)
        rows, xy = rows[ok], xy[ok]
        old, t = self.xy[rows], self._t[rows]
        a = np.where(np.isfinite(t), 1.0 - np.exp(-np.maximum(now - t, 0.0) / tau_s), 1.0)
        self.xy[rows] = np.where(np.isfinite(old), old + a[:, None] * (xy - old), xy)
        self._t[rows] = now


class BandGains:
    """Per band: gain offset b̂ (dB added to measured_power), its standard deviation, and the evidence."""

    def __init__(self, n_bands: int, params: GainParams | None = None) -> None:
        self.p = params or GainParams()
        self.mean = np.zeros(n_bands)
        self._sd = np.full(n_bands, self.p.prior_sd_db)
        self.updates = np.zeros(n_bands, dtype=np.int64)
        self.shared_db = 0.0
        self._places: list[dict[tuple[int, int], tuple[F64, int]]] = [{} for _ in range(n_bands)]
        self._acc = np.zeros((n_bands, len(GRID_DB)))  # sum over places of the mean window curve
        self._last = np.full(n_bands, -math.inf)
        self._t0: float | None = None
        self._log_prior = -0.5 * (GRID_DB / self.p.prior_sd_db) ** 2
        self._moved_before = np.zeros(n_bands, dtype=bool)  # restored: had moved before the restart
        self.deferred = 0  # looks put off by `max_per_tick`

    def sd(self, rows: I64) -> F64:
        """Prior standard deviation (dB) of bands `rows`."""
        return np.asarray(self._sd[rows])

    def due(self, rows: I64, now: float) -> NDArray[np.bool_]:
        """Which of `rows` may add a window now."""
        if self._t0 is None:
            self._t0 = now
        if now - self._t0 < self.p.settle_s:
            return np.zeros(len(rows), dtype=bool)
        return np.asarray(self.p.learn & (now - self._last[rows] >= self.p.every_s))

    def choose(self, rows: I64, ok: NDArray[np.bool_]) -> I64:
        """Indices into `rows` of the bands to look at now: of those `ok`, at most `max_per_tick`, the ones looked
        at longest ago first. The rest wait for a later tick (counted in `deferred`)."""
        pick = np.nonzero(ok)[0]
        if len(pick) <= self.p.max_per_tick:
            return pick
        self.deferred += len(pick) - self.p.max_per_tick
        oldest = np.argsort(self._last[rows[pick]], kind="stable")[: self.p.max_per_tick]
        return np.sort(pick[oldest])

    def state(self) -> dict[str, int]:
        """For node telemetry: bands with a learned gain, and looks deferred by the per-tick bound."""
        return {"band_gains_learned": int((self.updates > 0).sum()), "band_gain_looks_deferred": self.deferred}

    def add(self, rows: I64, now: float, ll: F64, xy: F64) -> None:
        """Fold each row's window log-likelihood curve over `GRID_DB` (M, G), found best at `xy` (M, 2), in.
        Rows with a non-finite value skip."""
        for j, i in enumerate(rows.tolist()):
            curve = ll[j]
            if not (np.isfinite(curve).all() and np.isfinite(xy[j]).all()):
                continue
            places = self._places[i]
            cell = (math.floor(xy[j, 0] / self.p.place_m), math.floor(xy[j, 1] / self.p.place_m))
            total, n = places.pop(cell, (np.zeros(len(GRID_DB)), 0))
            places[cell] = (total + (curve - curve.max()), n + 1)  # re-inserted: the newest place last
            if len(places) > self.p.max_places:
                del places[next(iter(places))]
            self._acc[i] = sum((t / c for t, c in places.values()), np.zeros(len(GRID_DB))) / self.p.temper
            self._last[i] = now
            self.updates[i] += 1
        self._refresh()

    def _refresh(self) -> None:
        """The shared part (median of the well-travelled bands' own fits), then every band's estimate."""
        moved = np.array([len(p) >= 2 for p in self._places], dtype=bool) | self._moved_before
        if moved.sum() < self.p.shared_min_bands:
            return  # the shared part is not known yet: a gain learned without it is the model's error (v1, docs)
        own = GRID_DB[np.argmax(self._acc[moved], axis=1)]
        self.shared_db = float(np.median(own))
        for i in np.nonzero(self.updates > 0)[0]:
            shifted = np.interp(GRID_DB + self.shared_db, GRID_DB, self._acc[i])  # evidence for b relative to it
            self.mean[i], self._sd[i] = self._estimate(shifted + self._log_prior)

    def _estimate(self, lp: F64) -> tuple[float, float]:
        j = int(np.argmax(lp))
        if j == 0 or j == len(lp) - 1:
            return float(np.clip(GRID_DB[j], -self.p.max_abs_db, self.p.max_abs_db)), self.p.prior_sd_db
        h = float(GRID_DB[1] - GRID_DB[0])
        d2 = float(lp[j - 1] - 2.0 * lp[j] + lp[j + 1])
        if not d2 < 0.0:
            return float(GRID_DB[j]), self.p.prior_sd_db
        mean = float(GRID_DB[j]) + h * float(lp[j - 1] - lp[j + 1]) / (2.0 * d2)
        sd = h / math.sqrt(-d2)
        return (float(np.clip(mean, -self.p.max_abs_db, self.p.max_abs_db)),
                float(np.clip(sd, self.p.min_sd_db, self.p.prior_sd_db)))

    def snapshot(self) -> GainState:
        """A copy of what outlives a restart (`GainState`)."""
        moved = np.array([len(p) >= 2 for p in self._places], dtype=bool) | self._moved_before
        return GainState(self.mean.copy(), self._sd.copy(), self.updates.copy(), self._acc.copy(), moved,
                         self.shared_db)

    def restore(self, s: GainState) -> None:
        """Start from `s` (same bands, same grid). A band's restored evidence becomes one place with no cell of
        its own: the next places add to it, and it is dropped like the oldest place once `max_places` are newer."""
        n = len(self.mean)
        if s.evidence.shape != (n, len(GRID_DB)) or any(len(a) != n for a in (s.mean, s.sd, s.updates, s.moved)):
            raise ValueError(f"band-gain state for {len(s.mean)} bands and {s.evidence.shape[-1]} grid points, "
                             f"this learner has {n} and {len(GRID_DB)}")
        self.mean = np.clip(np.asarray(s.mean, dtype=np.float64), -self.p.max_abs_db, self.p.max_abs_db)
        self._sd = np.clip(np.asarray(s.sd, dtype=np.float64), self.p.min_sd_db, self.p.prior_sd_db)
        self.updates = np.asarray(s.updates, dtype=np.int64).copy()
        self._acc = np.asarray(s.evidence, dtype=np.float64).copy()
        self._moved_before = np.asarray(s.moved, dtype=bool) & (self.updates > 0)
        self.shared_db = float(s.shared_db)
        self._places = [{} for _ in range(n)]
        for i in np.nonzero(self.updates > 0)[0].tolist():
            self._places[i][_RESTORED] = (self._acc[i] * self.p.temper, 1)
