"""The site's path-loss exponent from the beacons, with the adverts they missed counted (issue 16).

The linear calibration (`calibration`) averages the levels that were heard. A long beacon link is
heard only on its up-fades, and a pair whose average is near the floor is left out, so the long pairs
that stay in read high and the slope flattens: 2.45-2.59 for a true 2.7 on the default radio. A low
exponent inflates every distance in the window test, and a person standing just inside a fence is
then explained better outside (docs/bands.md, "Why the 1 dB sd floods: the exponent's bias").

Here each beacon × receiver pair keeps its log-likelihood on a level grid, built the way the window
test reads a band: per calibration round, the adverts heard (k, their mean level x̄) and the adverts
sent while the receiver listened but not heard (m), the latter through the receiver's hearing curve.
The level carries two shadows: a part that changes from round to round (what the beacons show
changing, `shadow_clock`), integrated per round, and a part held by the pair (its place, the model
error), integrated once over all its rounds. The exponent is the maximum of the profile likelihood
with every receiver's gain and every beacon's own power error free (priors: the site's receiver-gain sd,
a band's power sd), on a grid. The receivers' gains at that exponent are what the window test adds to their
levels (`rx_bias`): gains solved at another exponent would carry each receiver's distance-weighted share of
the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.bands.hearing import DV, V0, V1

F64 = NDArray[np.float64]
_GRID = np.arange(V0, V1 + DV / 2, DV)


@dataclass(frozen=True, slots=True)
class BeaconFitParams:
    """Grids, memory and guards of the censored beacon fit."""

    # On: the exponent the window test uses comes from this fit after `min_rounds` rounds (before: the linear
    # calibration's, which reads 0.1-0.25 low on the default radio).
    learn: bool = True
    memory_s: float = 1800.0  # each round's evidence is forgotten with this time constant
    min_rounds: int = 6  # rounds before the fit replaces the linear calibration's exponent
    prior_sd: float = 0.4  # the configured exponent as a prior, as the linear calibration's
    n_lo: float = 1.6
    n_hi: float = 4.5
    n_step: float = 0.05
    gain_range_db: float = 15.0
    # A beacon's true 1 m power differs from the one it advertises, as a band's does (`band_gain`'s prior):
    # with two to four beacons on a site, one beacon's error is shared by all its pairs.
    beacon_power_sd_db: float = 2.0
    sweeps: int = 10  # Newton steps over the receivers' gains and the beacons' powers together
    max_step_db: float = 2.0  # each step at most this: a censored pair's table is flat below its floor
    # The exponent moves slowly: after `min_rounds` + `fit_every` rounds it is re-fitted every `fit_every`
    # rounds, over the last estimate ± `n_window` (the whole range at the first fit).
    fit_every: int = 6
    n_window: float = 0.3
    # The beacons' misfit (`BeaconExponent.misfit`) above which the model is taken not to explain them: a band's
    # learned gain is then not used, neither its narrow sd nor its mean (`WindowDetector._band_sd`, `_inputs`).
    # Measured at 900 s: default radio 0.03-0.10 at σ 4-8, alt 0.26-1.42 (docs/bands.md, "The beacons' misfit").
    misfit_max: float = 0.25
    # The receivers' gains the window test adds to their levels from this fit too, at its exponent (`rx_bias`),
    # not the linear calibration's: those were solved with the linear exponent, 0.1-0.25 lower, so with this
    # exponent every receiver's distance-weighted share of the difference was left in its gain.
    use_gains: bool = True
    # Share of the slow shadowing taken as changing from round to round; None: what the beacons show
    # (`shadow_clock`'s time-varying part, 0 until it has enough pairs).
    round_share: float | None = None
    # ... and until the clock has its pairs: all held reads a long pair by its up-fades (the heard rounds'
    # levels outweigh the missed rounds), the exponent 0.1-0.2 low in the first minutes on the default radio.
    round_share_unknown: float = 0.5


@dataclass(frozen=True, slots=True)
class BeaconFitState:
    """The pairs' accumulated log-likelihoods on the level grid, for a restart."""

    loglik: F64  # (B·R, V)
    rounds: int


def _logsumexp(a: F64, axis: int) -> F64:
    """log Σ exp(a) along `axis`, shifted by the max. `np.logaddexp.reduce` takes an exp and a log per term, and
    measured 1.2-2.5 times the cost of a round here; scipy is not a dependency for this one function."""
    top = np.max(a, axis=axis, keepdims=True)
    return np.asarray(np.squeeze(top, axis=axis) + np.log(np.exp(a - top).sum(axis=axis)))


def _at(table: F64, pair: NDArray[np.int64], mu: F64) -> F64:
    """Rows `pair` of a (P, V) table on the level grid, read at levels `mu` (same shape as `pair`), linearly."""
    f = np.clip((mu - V0) / DV, 0.0, len(_GRID) - 1.000001)
    i0 = f.astype(np.int64)
    a = f - i0
    return np.asarray(table[pair, i0] * (1.0 - a) + table[pair, i0 + 1] * a)


def _shifted(table: F64, sd: float) -> F64:
    """(P, V) log ∫ exp(table(v + sd·z)) φ(z) dz for each row, on the grid: a Gaussian kernel of every grid step
    within 4 sd, edge values held beyond the grid. (Fifteen Gauss-Hermite nodes are ~2 dB apart at sd 4 dB, and a
    pair's accumulated log-likelihood peaks narrower than that: the result then jumped with where the peak fell
    between two nodes, and the exponent with it.)"""
    if sd <= 1e-9:
        return table
    reach = max(math.ceil(4.0 * sd / DV), 1)
    offs = np.arange(-reach, reach + 1)
    logw = -0.5 * (offs * DV / sd) ** 2
    logw -= np.log(np.exp(logw).sum())
    wide = np.pad(table, ((0, 0), (reach, reach)), mode="edge")
    n = table.shape[1]
    at = np.stack([wide[:, reach + o: reach + o + n] for o in offs.tolist()], axis=2)  # (P, V, taps)
    return _logsumexp(at + logw[None, None, :], axis=2)


class BeaconExponent:
    """Censored beacon pairs → the site's exponent."""

    def __init__(self, log_d: F64, exponent0: float, gain_sd_db: float,
                 params: BeaconFitParams | None = None) -> None:
        self.p = params or BeaconFitParams()
        self.log_d = np.asarray(log_d, dtype=np.float64)  # (B, R) log10 of each pair's distance
        n_b, n_r = self.log_d.shape
        self.exponent0 = exponent0
        self.gain_sd_db = max(gain_sd_db, 0.5)
        self.loglik = np.zeros((n_b * n_r, len(_GRID)))
        self.used = np.zeros(n_b * n_r)  # each pair's rounds, forgotten as its log-likelihood is
        self.rounds = 0
        self._t = -math.inf
        self.n = exponent0
        self.sd = self.p.prior_sd
        self.fits = 0
        self.misfit = math.inf  # not measured until the first fit
        # The receivers' gains at the fitted exponent (dB the pairs' levels carry above the model) and their
        # variance given the exponent, the beacons' powers integrated (the inverse Newton matrix's diagonal).
        self.gain = np.zeros(n_r)
        self.gain_var = np.full(n_r, self.gain_sd_db**2)

    def ready(self) -> bool:
        return self.p.learn and self.rounds >= self.p.min_rounds and self.log_d.size > 0

    def value(self, fallback: float) -> float:
        """The exponent for the window test: this fit's once it has `min_rounds`, else `fallback`."""
        return self.n if self.ready() else fallback

    def rx_bias(self, fallback: F64, fallback_var: F64) -> tuple[F64, F64]:
        """(R,) dB to add to each receiver's stored levels and the (R,) variance of that gain: this fit's, with its
        exponent (`value`), once it has fitted and `use_gains` is on; else the fallback (the linear calibration's)."""
        if not (self.ready() and self.fits and self.p.use_gains):
            return fallback, fallback_var
        return -self.gain, self.gain_var

    def add(self, now: float, k: F64, xbar: F64, sent: F64, listen: NDArray[np.bool_], logmiss: F64,
            fast_sd: float, round_sd: float) -> None:
        """One round: heard counts k (B, R), their mean levels x̄ (B, R; offset-corrected, no learned gain),
        adverts sent (B,), receivers listening (R,), each receiver's log P(miss | level) on the grid in the
        same terms (R, V), the per-advert sd and the sd of the shadow that changes from round to round."""
        if not self.p.learn or self.log_d.size == 0:
            return
        n_b, n_r = self.log_d.shape
        miss = np.where(listen[None, :], np.maximum(sent[:, None] - k, 0.0), 0.0).ravel()
        kk = np.where(listen[None, :], k, 0.0).ravel()
        xb = xbar.ravel()
        rx = np.tile(np.arange(n_r), n_b)
        use = (kk > 0) | (miss > 0)
        if not use.any():
            return
        v = _GRID[None, :]
        base = -kk[use, None] * (xb[use, None] - v) ** 2 / (2.0 * fast_sd**2) + miss[use, None] * logmiss[rx[use]]
        rnd = _shifted(base, round_sd)
        decay = math.exp(-max(now - self._t, 0.0) / self.p.memory_s) if math.isfinite(self._t) else 1.0
        self._t = now
        self.loglik *= decay
        self.loglik[use] += rnd - rnd.max(axis=1, keepdims=True)  # a constant per round does not move the fit
        self.used *= decay
        self.used[use] += 1.0
        self.rounds += 1

    def fit(self, power: F64, held_sd: float) -> None:
        """Re-fit from the pairs' log-likelihoods: beacons' advertised 1 m powers (B,), the held shadow's sd."""
        if not self.ready():
            return
        settled = self.rounds >= self.p.min_rounds + self.p.fit_every
        if settled and self.fits and self.rounds % self.p.fit_every:
            return
        ns = np.arange(self.p.n_lo, self.p.n_hi + self.p.n_step / 2, self.p.n_step)
        if self.fits:
            ns = ns[np.abs(ns - self.n) <= self.p.n_window + 1e-9]
        table = _shifted(self.loglik, held_sd)  # (P, V)
        mu0 = power[:, None] - 10.0 * ns[:, None, None] * self.log_d[None, :, :]  # (N, B, R)
        prof, mu, gain, gain_var = self._profile(table, mu0)
        prof = prof - 0.5 * ((ns - self.exponent0) / self.p.prior_sd) ** 2
        j = int(np.argmax(prof))
        self.gain, self.gain_var = gain[j], gain_var[j]
        self.misfit = self._misfit(table, mu[j])
        n, info = float(ns[j]), 1.0 / self.p.prior_sd**2
        if 0 < j < len(ns) - 1:
            c2 = prof[j + 1] + prof[j - 1] - 2.0 * prof[j]
            if c2 < -1e-12:
                h = self.p.n_step
                n += float(np.clip(-h * (prof[j + 1] - prof[j - 1]) / (2.0 * c2), -h / 2, h / 2))
                info = float(-c2 / h**2)
        self.n = n
        self.sd = 1.0 / math.sqrt(info)
        self.fits += 1

    def _misfit(self, table: F64, mu: F64) -> float:
        """−2 × each pair's log-likelihood at its fitted level (B, R) against its own best, held shadow integrated,
        averaged over the pairs heard or missed in 3 rounds or more: how far the distance law, the gains and the
        hearing curves leave the pairs from where their own adverts put them. The held shadow's allowance
        (slow part + model error) is generous, so this sits well below χ²₁'s 1 where the model is the channel."""
        ok = self.used >= 3.0
        if not ok.any():
            return math.inf
        at = _at(table, np.arange(mu.size), mu.ravel())
        return float(np.mean(-2.0 * (at - table.max(axis=1))[ok]))

    def misfits(self) -> bool:
        """The beacons say the model does not explain them (or the fit has not read them yet)."""
        return self.p.learn and self.misfit > self.p.misfit_max

    def _profile(self, table: F64, mu0: F64) -> tuple[F64, F64, F64, F64]:
        """(N,) log-likelihood at each exponent, the pairs' levels there (N, B, R), and the receivers' gains (N, R)
        with their variance (N, R), the beacons' own power errors at their best: Newton steps on all of them
        together, from the tables' own slopes (the concave part of each pair's curvature, so every step goes
        uphill). The variance is the last step's matrix inverted, the beacons' powers integrated. A search on a
        gain grid, or Newton on each in turn, left the profile jagged by more than its curvature (the receivers'
        gains and the beacons' powers share an offset only the priors fix), and the exponent followed the jags."""
        n_b, n_r = self.log_d.shape
        pair = np.arange(n_b * n_r).reshape(n_b, n_r)
        d1 = np.gradient(table, DV, axis=1)
        d2 = np.gradient(d1, DV, axis=1)

        def at(t: F64, mu: F64) -> F64:  # the pairs' table `t` at levels mu (N, B, R)
            return _at(t, pair, mu)

        lim, step = self.p.gain_range_db, self.p.max_step_db
        pg, ph = 1.0 / self.gain_sd_db**2, 1.0 / self.p.beacon_power_sd_db**2
        n = len(mu0)
        g = np.zeros((n, n_r))
        h = np.zeros((n, n_b))
        eye_g, eye_b = np.arange(n_r), n_r + np.arange(n_b)
        for _ in range(self.p.sweeps):
            mu = mu0 + g[:, None, :] + h[:, :, None]
            slope = at(d1, mu)
            w = -np.minimum(at(d2, mu), 0.0)  # (N, B, R): each pair's curvature, concave part only
            grad = np.concatenate([slope.sum(axis=1) - pg * g, slope.sum(axis=2) - ph * h], axis=1)
            a = np.zeros((n, n_r + n_b, n_r + n_b))
            a[:, eye_g, eye_g] = w.sum(axis=1) + pg
            a[:, eye_b, eye_b] = w.sum(axis=2) + ph
            a[:, n_r:, :n_r] = w
            a[:, :n_r, n_r:] = np.swapaxes(w, 1, 2)
            d = np.clip(np.linalg.solve(a, grad[..., None])[..., 0], -step, step)
            g = np.clip(g + d[:, :n_r], -lim, lim)
            h = np.clip(h + d[:, n_r:], -lim, lim)
        mu = mu0 + g[:, None, :] + h[:, :, None]
        ll = at(table, mu).sum(axis=(1, 2))
        prof = ll - 0.5 * pg * (g**2).sum(axis=1) - 0.5 * ph * (h**2).sum(axis=1)
        var = np.diagonal(np.linalg.inv(a), axis1=1, axis2=2)[:, :n_r]
        return np.asarray(prof), np.asarray(mu), np.asarray(g), np.asarray(var)

    def snapshot(self) -> BeaconFitState:
        return BeaconFitState(self.loglik.copy(), self.rounds)

    def restore(self, s: BeaconFitState) -> None:
        """Start from `s` (the same beacons, receivers and grid)."""
        if s.loglik.shape != self.loglik.shape:
            raise ValueError(f"beacon fit of shape {s.loglik.shape}, this site has {self.loglik.shape}")
        if not np.isfinite(s.loglik).all():
            raise ValueError("beacon fit log-likelihood is not finite")
        self.loglik = np.asarray(s.loglik, dtype=np.float64).copy()
        self.rounds = max(int(s.rounds), 0)
        # The pairs' round counts are not kept: a pair with evidence is taken to have all the rounds (they only
        # choose which pairs the misfit reads, `_misfit`), so the misfit is read at the first fit, not rounds later.
        self.used = np.where(np.any(self.loglik != 0.0, axis=1), float(self.rounds), 0.0)
        self.fits = 0  # the first fit after a restart searches the whole range
        self._t = -math.inf


def tables_shifted(logmiss: F64, shift_db: F64) -> F64:
    """(R, V) miss tables read `shift_db` (R,) higher: table'(v) = table(v + shift) (levels in other terms)."""
    out = np.empty_like(logmiss)
    for r in range(len(logmiss)):
        out[r] = np.interp(_GRID + float(shift_db[r]), _GRID, logmiss[r])
    return out
