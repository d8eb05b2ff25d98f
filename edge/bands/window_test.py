"""The breach test: "outside the allowed area by at least the margin" vs "inside", per band and window.

For a window of W seconds the band is held at one position (a person standing or wandering
outside accumulates evidence over the whole window), and every receiver contributes through its
exact window likelihood (`window_kernels`): the adverts it heard (mean level, count) and the ones
it missed while listening, through its own learned hearing curve (`hearing`), with the slow
shadowing of the link held over the window and integrated out, so a correlated window counts
once, and a static shadow on one link cannot fake agreement across several receivers. The band's
gain is marginalised over its learned prior (`band_gain`). No position fix is needed: a band
heard now and then by one outside receiver and never by the inside one is outside.

Candidates per distinct allowed-zone set: the allowed area's outline (1 m) and interior grid;
outside, a grid around the area at least `margin_m` beyond it and far points out to 400 m. Each set
also has a "near" twin without the outside points beyond `far_m`, used for every band a listening
receiver heard in the window (`Candidates.restrict`).
The statistic is 2·(best outside - best inside) log-likelihood.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from edge.bands.geometry import ZoneMap, ZoneShape, as_points, grid_over, sample_region
from edge.bands.hearing import DV, V0
from edge.bands.window_kernels import MU_STEP, window_lr
from protocols.site_config import SiteConfig

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(7)  # slow shadowing nodes
_GH_LW = np.log(_GH_W / _GH_W.sum())
_B_X, _B_W = np.polynomial.hermite_e.hermegauss(5)  # band-gain prior nodes
_B_LW = np.log(_B_W / _B_W.sum())
CELL_M = 12.0  # side of the kernel's fine search cells (speed settings only: the result does not depend on them)
CELL_RATIO = 1  # fine cells a side of a coarse cell
# The band-gain learner's position-free set (`position_free`): its likelihood is flat over wide areas (no fence
# splits it, every gain is tried), so the bounds prune little and fewer, larger cells cost less. Measured on the
# 500-band site's learner calls (x86_64): 12 m × 1 126 ms a call, 16 m × 4 72 ms, 8 m × 4 85 ms, no pruning 199 ms
# (`bench.bands_gain_cost`).
FREE_CELL_M, FREE_CELL_RATIO = 16.0, 4


@dataclass(frozen=True, slots=True)
class WindowParams:
    """Windows, thresholds and the link model of the window breach test."""

    extra_s: tuple[float, ...] = (0.0, 10.0, 20.0)  # long windows: breach_dwell_s + each of these
    # Added to the threshold of each window of extra_s (the detector reads S_w - this everywhere: rules, schedule,
    # decide mode, the empirical null). One threshold for windows of different length is a multiple test whose
    # shortest window has the widest null tail: on 2,016 null band-hours of the default radio six of seven false
    # breaches were the dwell-long window alone at 13-15 while the +10/+20 s windows stood at 1-9. (2, 0, 0) and
    # (3, 0, 0) removed those six but lost 4 of 64 default-radio escapes, (1, 0, 0) five of six for 2 of 64: off
    # until a 2,016 band-hour batch decides (docs/bands.md, "Thresholds per window").
    threshold_extra: tuple[float, ...] = (0.0, 0.0, 0.0)
    clear_window_s: float = 8.0
    threshold: float = 16.0  # 2·ln LR over a long window that counts as "outside" (from the null runs)
    clear_threshold: float = 2.0  # a short window below this counts as "back inside"
    confident_inside: float = -6.0  # 2·ln LR at most this (and a fix well inside): learn gains from it
    margin_m: float = 3.0  # "outside" = at least this far beyond the allowed area
    outside_pad_m: float = 45.0
    outside_spacing_m: float = 6.0
    inside_spacing_m: float = 4.0
    edge_spacing_m: float = 1.5
    slow_fraction: float = 0.5  # share of the site's shadowing variance held over a window
    model_error_db: float = 1.5  # path-loss model error per link, held over the window
    min_distance_m: float = 0.5
    # Outside candidates more than far_m beyond the allowed area are tested only for a band that no
    # listening receiver heard in the window (best heard share below far_heard_share, i.e. ~none): with
    # the calibrated path-loss exponent biased low (alt radio: 2.25 for 2.64), "60-85 m away" fits a
    # person standing just inside a fence better than inside does. Escapes of interest stand 20-35 m out.
    far_m: float = 35.0
    far_heard_share: float = 0.01
    # The path-loss exponent as a nuisance parameter of both hypotheses, profiled over the calibrated value
    # plus these steps (`window_kernels.window_lr`); (0.0,) = the calibrated exponent only. Upwards only:
    # the beacons' estimate averages the levels of the adverts that were heard, and a long link is heard
    # only on its up-fades, so it reads the slope flat (2.17-2.5 for a true 2.4-2.65 on the alt radio,
    # 2.46-2.53 for 2.7 on the default one). Measured with (0, 0.2, 0.4): alt null false breaches 17 -> 0 in
    # 50 band-h and demo recall up, but compound recall to 0/16 on both radios, whose escapees' evidence
    # comes from that same low exponent: off (docs/bands.md, "Exponent profiled in both hypotheses").
    exponent_up: tuple[float, ...] = (0.0,)
    profile_above: float = -2.0  # ... tried only where the calibrated exponent gives a statistic above this


    def __post_init__(self) -> None:
        if len(self.threshold_extra) != len(self.extra_s):
            raise ValueError("threshold_extra needs one entry per window of extra_s")


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One band's test over one window."""

    lr: F64  # (M,) 2·ln LR, NaN where nothing could be tested
    out_xy: F64  # (M, 2) best outside position
    out_m: F64  # (M,) its distance beyond the allowed area
    in_xy: F64  # (M, 2) best inside position
    b_mean: F64  # (M,) band-gain posterior mean at the best inside point, relative to the prior mean
    b_var: F64
    ll_in: F64  # (M,) best inside log-likelihood (band gain marginalised), NaN where nothing was tested


class Candidates:
    """Candidate positions per allowed-zone set, with 10·log10(distance) to every receiver."""

    def __init__(self, site: SiteConfig, rx_pos: F64, p: WindowParams) -> None:
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        zmap = ZoneMap([ZoneShape(z.id, z.kind, as_points(z.polygon)) for z in site.zones])
        zone_ids = [z.id for z in site.zones]
        self.set_of: dict[tuple[str, ...], int] = {}
        self.allowed_zones: list[tuple[str, ...]] = []
        pts_all: list[F64] = []
        out_all: list[F64] = []
        near_sets: list[tuple[F64, F64, F64]] = []
        lo, mid, hi = [], [], []
        n = 0
        for b in site.bands:
            key = tuple(sorted(b.allowed_zones))
            if key in self.set_of:
                continue
            self.set_of[key] = len(self.allowed_zones)
            self.allowed_zones.append(key)
            shapes = [polys[z] for z in key]
            inside = sample_region(shapes, spacing=p.inside_spacing_m, edge_spacing=p.edge_spacing_m)
            allp = np.concatenate(shapes)
            bx = (float(allp[:, 0].min()) - p.outside_pad_m, float(allp[:, 1].min()) - p.outside_pad_m,
                  float(allp[:, 0].max()) + p.outside_pad_m, float(allp[:, 1].max()) + p.outside_pad_m)
            grid = grid_over(bx, p.outside_spacing_m)
            centre = np.array([(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2])
            ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            far = np.concatenate([centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1)
                                  for r in (100.0, 200.0, 400.0)])
            # Near a receiver the likelihood is sharp (a few metres change the level by 10 dB): the grid
            # is refined around every receiver so a person standing next to one is not missed.
            ring = np.linspace(0, 2 * np.pi, 8, endpoint=False)
            near = np.concatenate([rx_pos[:, None, :] + r * np.stack([np.cos(ring), np.sin(ring)], axis=1)[None]
                                   for r in (0.0, 1.5, 3.0)], axis=1).reshape(-1, 2) if len(rx_pos) else grid[:0]
            cand = np.concatenate([grid, far, near])
            mask = np.array([z in key for z in zone_ids], dtype=bool)
            dist = zmap.union_signed_distance(zmap.signed_distances(cand), mask)
            outside = cand[dist >= p.margin_m]
            lo.append(n)
            mid.append(n + len(inside))
            n += len(inside) + len(outside)
            hi.append(n)
            pts_all += [inside, outside]
            out_all += [np.zeros(len(inside)), dist[dist >= p.margin_m]]
            keep = dist[dist >= p.margin_m] <= p.far_m
            near_sets.append((inside, outside[keep], dist[dist >= p.margin_m][keep]))
        self.n_full = len(lo)
        for inside, outside, od in near_sets:
            lo.append(n)
            mid.append(n + len(inside))
            n += len(inside) + len(outside)
            hi.append(n)
            pts_all += [inside, outside]
            out_all += [np.zeros(len(inside)), od]
        self.far_heard_share = p.far_heard_share
        self.pts = np.concatenate(pts_all) if pts_all else np.zeros((0, 2))
        self.out_m = np.concatenate(out_all) if out_all else np.zeros(0)
        self.lo, self.mid, self.hi = (np.array(v, dtype=np.int64) for v in (lo, mid, hi))
        d = np.linalg.norm(self.pts[:, None, :] - rx_pos[None, :, :], axis=2)
        self.logd = np.ascontiguousarray(10.0 * np.log10(np.maximum(d, p.min_distance_m)))
        self.set_cells(CELL_M, CELL_RATIO)
        n_s = len(self.lo)
        self.logd_min = np.zeros((n_s, rx_pos.shape[0]))
        self.logd_max = np.zeros((n_s, rx_pos.shape[0]))
        for s in range(n_s):
            block = self.logd[self.lo[s]:self.hi[s]]
            if len(block):
                self.logd_min[s] = block.min(axis=0)
                self.logd_max[s] = block.max(axis=0)

    def set_cells(self, fine_m: float, ratio: int = 1) -> None:
        """Two levels of squares over each set's inside and outside candidates (the kernel's search cells).

        Fine cells of `fine_m` hold candidates (rows of `logd`, ascending); coarse cells of `ratio`
        fine cells a side hold fine cells. Per cell its range of 10·log10 d to every receiver, from
        which the kernel bounds the likelihood of all its candidates at once (`window_kernels._search`).
        """
        fine: list[I64] = []
        coarse: list[tuple[int, int]] = []
        cell_lo, cell_mid, cell_hi = [], [], []
        for s in range(len(self.lo)):
            cell_lo.append(len(coarse))
            for a, b in ((self.lo[s], self.mid[s]), (self.mid[s], self.hi[s])):
                if b > a:
                    rows = np.arange(a, b, dtype=np.int64)
                    key = np.floor(self.pts[a:b] / fine_m).astype(np.int64)
                    big = np.floor_divide(key, ratio)
                    for kb in np.unique(big, axis=0):
                        in_big = (big == kb).all(axis=1)
                        start = len(fine)
                        for kf in np.unique(key[in_big], axis=0):
                            fine.append(rows[in_big & (key == kf).all(axis=1)])
                        coarse.append((start, len(fine)))
                if a == self.lo[s]:
                    cell_mid.append(len(coarse))
            cell_hi.append(len(coarse))
        self.cell_lo, self.cell_mid, self.cell_hi = (np.array(v, dtype=np.int64) for v in (cell_lo, cell_mid, cell_hi))
        n_rx = self.logd.shape[1]
        self.cptr = np.cumsum([0] + [len(m) for m in fine]).astype(np.int64)
        self.cg = np.concatenate(fine).astype(np.int64) if fine else np.zeros(0, dtype=np.int64)
        self.cmin = np.array([self.logd[m].min(axis=0) for m in fine]).reshape(-1, n_rx)
        self.cmax = np.array([self.logd[m].max(axis=0) for m in fine]).reshape(-1, n_rx)
        self.kptr = np.array([0] + [b for _, b in coarse], dtype=np.int64)
        self.kmin = np.array([self.cmin[a:b].min(axis=0) for a, b in coarse]).reshape(-1, n_rx)
        self.kmax = np.array([self.cmax[a:b].max(axis=0) for a, b in coarse]).reshape(-1, n_rx)

    def position_free(self) -> Candidates:
        """Every candidate of the full sets, once, as one set's inside (its set index is 0): the best position
        anywhere, inside the fence or out, for learning a band's gain without assuming where it is."""
        rows = np.concatenate([np.arange(self.lo[s], self.hi[s]) for s in range(self.n_full)])
        _, first = np.unique(self.pts[rows], axis=0, return_index=True)
        rows = np.sort(rows[first])
        free = copy.copy(self)
        free.pts, free.out_m = self.pts[rows], np.zeros(len(rows))
        free.logd = np.ascontiguousarray(self.logd[rows])
        free.lo, free.mid, free.hi = (np.array([v], dtype=np.int64) for v in (0, len(rows), len(rows)))
        free.n_full, free.set_of, free.allowed_zones = 1, {}, []
        free.set_cells(FREE_CELL_M, FREE_CELL_RATIO)
        free.logd_min, free.logd_max = free.logd.min(axis=0)[None], free.logd.max(axis=0)[None]
        return free

    def restrict(self, sets: I64, k: F64, n_sent: F64, listen: NDArray[np.bool_]) -> I64:
        """Rows' candidate sets: the near twin where some listening receiver heard the band."""
        share = np.where(listen[None, :], k, 0.0) / np.maximum(n_sent, 1.0)[:, None]
        well = share.max(axis=1, initial=0.0) >= self.far_heard_share
        return np.asarray(np.where(well, sets + self.n_full, sets), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class LinkInputs:
    """Everything but the candidates that one call of the test needs (rows = bands tested)."""

    k: F64  # (M, R) adverts heard in the window
    xbar: F64  # (M, R) their mean corrected level (dBm)
    n_sent: F64  # (M,)
    power: F64  # (M,) measured power + learned band gain
    sb: F64  # (M,) band-gain prior sd
    slow_sd: F64  # (M, R) held (slow) part of each link's sd
    fast_sd: float
    listen: NDArray[np.bool_]  # (R,)
    floor: F64  # (R,)
    logmiss: F64  # (R, V)
    exponent: float
    sets: I64  # (M,) candidate set of each row
    # The window cut into blocks (`shadow_clock`): per block heard counts and mean levels (M, R, B), adverts
    # sent (M, B), and the sd of the slow shadowing drawn afresh per block (M, R); slow_sd is then the part
    # held over the whole window. None = one block (everything in slow_sd held).
    kb: F64 | None = None
    xb: F64 | None = None
    nsb: F64 | None = None
    blk_sd: F64 | None = None
    exponent_up: tuple[float, ...] = (0.0,)  # the exponents tested: exponent + each of these (profiled) ...
    profile_above: float = -math.inf  # ... where the first exponent's statistic is above this

    def take(self, idx: I64) -> LinkInputs:
        """The same inputs for the rows `idx` only."""
        out = replace(self, k=self.k[idx], xbar=self.xbar[idx], n_sent=self.n_sent[idx], power=self.power[idx],
                      sb=self.sb[idx], slow_sd=self.slow_sd[idx], sets=self.sets[idx])
        if self.kb is None or self.xb is None or self.nsb is None or self.blk_sd is None:
            return out
        return replace(out, kb=self.kb[idx], xb=self.xb[idx], nsb=self.nsb[idx], blk_sd=self.blk_sd[idx])

    def blocks(self) -> tuple[F64, F64, F64, F64]:
        """(kb, xb, nsb, blk_sd) for the kernel: one block (blk_sd 0) when the window is not cut."""
        if self.kb is None or self.xb is None or self.nsb is None or self.blk_sd is None:
            m, r = self.k.shape
            return self.k[:, :, None], self.xbar[:, :, None], self.n_sent[:, None], np.zeros((m, r))
        return self.kb, self.xb, self.nsb, self.blk_sd


def run_test(c: Candidates, x: LinkInputs, inside_only: bool = False, decide: tuple[float, ...] = ()) -> WindowResult:
    """The compiled test for every row (`inside_only`: only the inside candidates, for `ll_in`; lr is then -1000).

    `decide` (ascending): the thresholds the caller compares lr with, if it reads nothing else of lr below the
    last one. Then lr below it is only settled against each threshold, not computed (`window_kernels.window_lr`):
    much cheaper for bands far inside. () = the exact statistic everywhere.
    """
    m = len(x.sets)
    lr, b_mean, b_var, ll_in = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    best_in, best_out = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    f64 = np.float64
    hi = c.mid if inside_only else c.hi
    cell_hi = c.cell_mid if inside_only else c.cell_hi
    kb, xb, nsb, blk = x.blocks()
    window_lr(np.ascontiguousarray(x.k, dtype=f64), np.ascontiguousarray(x.xbar, dtype=f64),
              np.ascontiguousarray(x.n_sent, dtype=f64), np.ascontiguousarray(x.power, dtype=f64),
              np.ascontiguousarray(x.sb, dtype=f64), np.ascontiguousarray(x.slow_sd, dtype=f64), float(x.fast_sd),
              np.ascontiguousarray(x.listen, dtype=np.bool_), np.ascontiguousarray(x.floor, dtype=f64),
              np.ascontiguousarray(x.logmiss, dtype=f64), float(V0), float(DV), c.logd, c.lo, c.mid, hi,
              np.ascontiguousarray(x.sets, dtype=np.int64), _exponents(x), float(x.profile_above), _GH_X,
              _GH_LW, _B_X, _B_LW, c.cell_lo, c.cell_mid, cell_hi, c.kptr, c.kmin, c.kmax, c.cptr, c.cg, c.cmin, c.cmax,
              lr, best_in, best_out, b_mean, b_var, ll_in,
              np.ascontiguousarray(kb, dtype=f64), np.ascontiguousarray(xb, dtype=f64),
              np.ascontiguousarray(nsb, dtype=f64), np.ascontiguousarray(blk, dtype=f64),
              np.asarray(sorted(decide), dtype=f64))
    return _result(c, lr, best_in, best_out, b_mean, b_var, ll_in)


def _exponents(x: LinkInputs) -> F64:
    return np.ascontiguousarray(float(x.exponent) + np.asarray(x.exponent_up or (0.0,), dtype=np.float64))


def _result(c: Candidates, lr: F64, best_in: I64, best_out: I64, b_mean: F64, b_var: F64,
            ll_in: F64) -> WindowResult:
    ok_in, ok_out = best_in >= 0, best_out >= 0
    in_xy = np.where(ok_in[:, None], c.pts[np.maximum(best_in, 0)], np.nan)
    out_xy = np.where(ok_out[:, None], c.pts[np.maximum(best_out, 0)], np.nan)
    out_m = np.where(ok_out, c.out_m[np.maximum(best_out, 0)], np.nan)
    return WindowResult(lr, out_xy, out_m, in_xy, b_mean, b_var, ll_in)


def link_loglik(k: float, xbar: float, missed: float, slow_sd: float, fast_sd: float, logmiss: F64,
                mu: F64) -> F64:
    """Reference (numpy) of one link's window log-likelihood at levels `mu` (no tabulation)."""
    s = slow_sd * _GH_X[None, :]
    v = mu[:, None] + s
    a = _GH_LW[None, :] + np.zeros_like(v)
    if k > 0:
        a = a - k * (xbar - v) ** 2 / (2 * fast_sd**2)
    if missed > 0:
        grid = V0 + DV * np.arange(len(logmiss))
        a = a + missed * np.interp(v, grid, logmiss)
    top = a.max(axis=1, keepdims=True)
    return np.asarray((top + np.log(np.exp(a - top).sum(axis=1, keepdims=True)))[:, 0])


def link_loglik_blocks(kb: F64, xb: F64, missb: F64, held_sd: float, blk_sd: float, fast_sd: float,
                       logmiss: F64, mu: F64) -> F64:
    """Reference of one link's log-likelihood with the slow shadowing held (h) plus drawn per block (s_b)."""
    h = held_sd * _GH_X
    acc = np.zeros((len(mu), len(h)))
    for b in range(len(kb)):
        if kb[b] <= 0 and missb[b] <= 0:
            continue
        acc += link_loglik(float(kb[b]), float(xb[b]), float(missb[b]), blk_sd, fast_sd, logmiss,
                           (mu[:, None] + h[None, :]).ravel()).reshape(acc.shape)
    a = acc + _GH_LW[None, :]
    top = a.max(axis=1, keepdims=True)
    return np.asarray((top + np.log(np.exp(a - top).sum(axis=1, keepdims=True)))[:, 0])


def run_reference(c: Candidates, x: LinkInputs) -> WindowResult:
    """The same test in plain numpy, evaluating every link exactly at every candidate (the oracle)."""
    m = len(x.sets)
    lr = np.full(m, np.nan)
    best_in = np.full(m, -1, dtype=np.int64)
    best_out = np.full(m, -1, dtype=np.int64)
    b_mean, b_var, ll_in = np.zeros(m), np.zeros(m), np.full(m, np.nan)
    kb, xb, nsb, blk = x.blocks()
    for i in range(m):
        s = int(x.sets[i])
        k = np.minimum(x.k[i], x.n_sent[i])
        if not (k > 0).any():
            continue
        rows = np.arange(c.lo[s], c.hi[s])
        ll = np.full(len(rows), -np.inf)
        per_b = np.zeros((len(rows), len(_B_X)))
        for n_exp in _exponents(x):  # profiled: each candidate keeps its best exponent
            per_e = np.zeros((len(rows), len(_B_X)))
            for j, z in enumerate(_B_X):
                base = x.power[i] + x.sb[i] * z
                acc = np.full(len(rows), _B_LW[j])
                for r in range(k.shape[0]):
                    if k[r] <= 0 and not x.listen[r]:
                        continue
                    mu = base - n_exp * c.logd[rows, r]
                    missed = max(float(x.n_sent[i] - k[r]), 0.0) if x.listen[r] else 0.0
                    if kb.shape[2] > 1 and blk[i, r] > 0:
                        mb = np.maximum(nsb[i] - np.minimum(kb[i, r], nsb[i]), 0.0) * float(x.listen[r])
                        acc += link_loglik_blocks(kb[i, r], xb[i, r], mb, float(x.slow_sd[i, r]),
                                                  float(blk[i, r]), x.fast_sd, x.logmiss[r], mu)
                        continue
                    acc += link_loglik(float(k[r]), float(x.xbar[i, r]), missed,
                                       float(x.slow_sd[i, r]), x.fast_sd, x.logmiss[r], mu)
                per_e[:, j] = acc
            top = per_e.max(axis=1, keepdims=True)
            ll_e = top[:, 0] + np.log(np.exp(per_e - top).sum(axis=1))
            better = ll_e > ll
            ll = np.where(better, ll_e, ll)
            per_b[better] = per_e[better]
        n_in = int(c.mid[s] - c.lo[s])
        gi, go = int(np.argmax(ll[:n_in])), int(np.argmax(ll[n_in:]))
        lr[i] = 2.0 * (ll[n_in + go] - ll[gi])
        best_in[i], best_out[i] = rows[gi], rows[n_in + go]
        ll_in[i] = ll[gi]
        w = np.exp(per_b[gi] - per_b[gi].max())
        v = x.sb[i] * _B_X
        b_mean[i] = float((w * v).sum() / w.sum())
        b_var[i] = float(max((w * v * v).sum() / w.sum() - b_mean[i] ** 2, 0.0))
    return _result(c, lr, best_in, best_out, b_mean, b_var, ll_in)


def slow_sd(shadowing_db: float, p: WindowParams, extra_var_db2: F64) -> F64:
    """(R,) held part of every receiver's link sd: slow shadowing, model error, per-receiver extra."""
    return np.asarray(np.sqrt(shadowing_db**2 * p.slow_fraction + p.model_error_db**2 + np.maximum(extra_var_db2, 0.0)))


def fast_sd(shadowing_db: float, p: WindowParams) -> float:
    """Per-packet sd (dB)."""
    return max(math.sqrt(shadowing_db**2 * (1.0 - p.slow_fraction)), 1.0)


__all__ = ["MU_STEP", "Candidates", "LinkInputs", "WindowParams", "WindowResult", "fast_sd", "link_loglik",
           "link_loglik_blocks",
           "run_reference", "run_test", "slow_sd"]
