"""Glue of the window breach test: which bands to test each tick, over which windows, and learning.

Per tick it tests (`window_test`) every band that is suspect (its fix is near or beyond its fence,
it is heard by at most two receivers, it was recently unheard, its last test leaned outside, or it
is in breach) every `suspect_every_s`, and every other band every `others_every_s`, over the long
windows breach_dwell_s + (0, 10, 20) s; bands in breach also over the short clear window every
tick. From every tested band it learns each receiver's gain residual (`hearing`) and, where turned
on, the band's own gain from its position-free fit (`band_gain`); from bands
confidently inside, the site's path-loss exponent (`window_exponent`); and each calibration round it
re-reads every receiver's floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from edge.bands.band_gain import GRID_DB, SMOOTH_DB, BandGains, GainParams, GainState, PlaceTrack
from edge.bands.beacon_exponent import BeaconExponent, BeaconFitParams, BeaconFitState, tables_shifted
from edge.bands.empirical_null import EmpiricalNull, NullParams, NullState
from edge.bands.hearing import Hearing, HearingParams, HearingState
from edge.bands.miss_bursts import BurstLearner, BurstParams, BurstState
from edge.bands.receiver_guard import GuardParams, guard
from edge.bands.shadow_clock import ClockParams, ClockState, ShadowClock
from edge.bands.tracker import Tracker
from edge.bands.window_exponent import ExponentLearner, ExponentParams, ExponentState
from edge.bands.window_loss import LossLearner, LossParams, LossState
from edge.bands.window_test import Candidates, LinkInputs, WindowParams, WindowResult, fast_sd, run_test, slow_sd
from protocols.site_config import SiteConfig

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A band's window-test result this tick (NaN = not tested or nothing heard)."""

    lr: float  # max over the long windows of 2·ln LR less the window's threshold offset, divided by φ
    clear_lr: float  # over the short clear window (bands in breach only)
    x: float  # best outside position of the window with the largest LR
    y: float
    out_m: float  # its distance beyond the allowed area


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Scheduling of the window test."""

    suspect_every_s: int = 3
    others_every_s: int = 15
    # A band whose last statistic was at least this share of the threshold is tested every second: its
    # statistic moves by a few units a second, and one that peaks between two 3 s tests is missed
    # (measured: an escapee at 13.0 for one second, 12.7 at the tests around it).
    hot_share: float = 0.5
    # The window is cut into blocks (a slow shadowing that changes with time) only where the held test's
    # statistic is above this share of the threshold: 4-5× the table cost, spent where a breach can come
    # from (measured on the 500-band site: gated at 0 the tick's window test cost 63 ms, ungated 74, held 36).
    blocks_above_share: float = 0.25
    shorter_below: float = -2.0  # the middle windows are tested only where the longest is above this
    # The shortest window (the dwell) is tested for every tested band, whatever the longest says: a person who
    # left 15-30 s ago has the longest window still half inside (statistic -8…0) while the dwell-long one is
    # already at 5-11 and rising; gated on the longest, such a band stayed on the 15 s schedule and its
    # statistic peaked unseen (compound gate escape 22.5 m out: 14.8 at 38 s, tested at 31 and 43 s).
    shortest_always: bool = True
    suspect_out_m: float = -1.5  # a fix closer than this to the fence (or beyond) makes a band suspect
    recent_unheard_s: float = 8.0
    gain_every_s: float = 20.0
    residual_min_k: float = 5.0
    residual_above_floor_db: float = 4.0
    # The long windows' statistic below the threshold is only compared with a few values (confident inside,
    # shorter_below, blocks and suspect at threshold/4, hot, the threshold): the kernel then settles those
    # comparisons from its bounds instead of computing it (`window_test.run_test`'s `decide`). The alerts are
    # the same; `last_lr` and Verdict.lr below the threshold are then not the statistic. True = compute it
    # everywhere (the ROC and trace benches read it at other thresholds).
    exact_lr: bool = False


@dataclass(frozen=True, slots=True)
class DetectorState:
    """What the detector's learners know of the site's hardware and place (bands and receivers in dense order),
    for a restart. The receiver-gain correction is not in it: it is recomputed from `hearing` and the beacon
    calibration (`Tracker.snapshot`) at the first tick. Nothing of the bands' current windows or positions is."""

    gains: GainState
    hearing: HearingState
    loss: LossState
    bursts: BurstState
    exponent: ExponentState
    null: NullState
    clock: ClockState
    beacon_fit: BeaconFitState


class WindowDetector:
    """Runs the window test for a site's bands and learns band gains and receiver health."""

    def __init__(self, site: SiteConfig, tracker: Tracker, n_bands: int, dwell_s: float,
                 params: WindowParams | None = None, sched: DetectorParams | None = None,
                 hearing: HearingParams | None = None, gains: GainParams | None = None,
                 exponent: ExponentParams | None = None, loss: LossParams | None = None,
                 clock: ClockParams | None = None, rx_guard: GuardParams | None = None,
                 null: NullParams | None = None, bursts: BurstParams | None = None,
                 beacon_fit: BeaconFitParams | None = None) -> None:
        self.p = params or WindowParams()
        self.guard = rx_guard or GuardParams()
        self.s = sched or DetectorParams()
        self.tracker = tracker
        self.n = n_bands
        self.windows = tuple(dwell_s + e for e in self.p.extra_s)
        # Each window's own threshold offset: its statistic is read as S_w - offset everywhere below.
        self._offset = dict(zip(self.windows, self.p.threshold_extra, strict=True))
        self.sigma = site.radio.shadowing_db
        self.cand = Candidates(site, tracker.rx_pos, self.p)
        self._free: Candidates | None = None  # every candidate as one set, for the band-gain learner (built on use)
        self.set_of_band = np.array([self.cand.set_of[tuple(sorted(b.allowed_zones))] for b in site.bands],
                                    dtype=np.int64)
        self.hearing = Hearing(tracker.rx_ids, fast_sd(self.sigma, self.p), hearing,
                               default_floor_dbm=tracker.p.assumed_floor_dbm)
        self.gains = BandGains(n_bands, gains)
        self.places = PlaceTrack(n_bands)  # where the learner keeps a look's evidence (`GainParams.place_tau_s`)
        self.exponent = ExponentLearner(exponent)
        cal = tracker.calibration
        self.beacon_fit = BeaconExponent(cal.log_d, cal.exponent0, site.radio.receiver_gain_sd_db, beacon_fit)
        self._exp_last = np.full(n_bands, -math.inf)
        hp, lp = self.hearing.p, loss or LossParams()
        self.loss = LossLearner(len(tracker.rx_ids), hp.base_loss,
                                hp.knee_above_floor_db + lp.above_knee_sd * self.hearing.fast_sd, lp)
        self._loss_last = np.full(n_bands, -math.inf)
        self.bursts = BurstLearner(len(tracker.rx_ids), self.loss.above_floor_db, bursts)
        self._miss_weight = np.ones(len(tracker.rx_ids))  # 1 / each receiver's miss dispersion (`miss_bursts`)
        self.clock = ShadowClock(np.asarray(tracker.calibration.beacon_idx, dtype=np.int64), clock)
        self.last_lr = np.full(n_bands, np.nan)  # raw: before the site's scale φ (`empirical_null`)
        # The statistic's dispersion on this site: the long windows' statistics are reported divided by it.
        self.null = EmpiricalNull(n_bands, self.p.threshold, null)
        self._resid_last = np.full(n_bands, -math.inf)
        n_rx = len(tracker.rx_ids)
        # Band-learned correction and the gain's variance after it: the site's prior until the first round.
        self._gain: tuple[F64, F64] = (np.zeros(n_rx), tracker.calibration.link_var_db2())
        # The receivers' gains added to their levels: the censored fit's once it has run (`BeaconExponent.rx_bias`).
        self._rx_bias = np.asarray(tracker.calibration.rx_bias)
        self._next_floor = -math.inf

    def _band_sd(self, rows: I64) -> F64:
        """The band gains' sd: as learned where the site's own null says the model fits (φ = 1) and the beacons do
        too (`BeaconExponent.misfits`, with the censored fit on), else the prior's.

        A narrow gain is only worth what the model's other terms are: where the null is wider than χ²₂ the shared
        error a wide gain absorbs is there (docs/bands.md, "Does the learner pay once the escapee has lived on the
        site a while?"). With the learner's floor at the prior (`GainParams.min_sd_db` 2 dB) this is a no-op."""
        sd = self.gains.sd(rows)
        if self.null.scale > 1.0 + 1e-9 or self.null.misfit or self.beacon_fit.misfits():
            return np.maximum(sd, self.gains.p.prior_sd_db)
        return sd

    def gain_state(self) -> dict[str, int]:
        """For node telemetry: the band-gain learner's counts, and whether its gains are used (1) or every band keeps
        the prior because the beacons say the model does not fit (0; `_inputs`, `_band_sd`)."""
        return {**self.gains.state(), "band_gains_used": int(self.gains.p.learn and not self.beacon_fit.misfits())}

    def _thresholds(self) -> tuple[float, ...]:
        """What this class and the rules compare a long window's statistic with (see DetectorParams.exact_lr).

        The threshold last: at and above it the statistic itself is read (the alert's evidence)."""
        if self.s.exact_lr:
            return ()
        t = self.p.threshold
        below = {self.p.confident_inside, self.s.shorter_below, t * self.s.blocks_above_share, t / 4,
                 t * self.s.hot_share, *self.null.levels()}
        return (*sorted(v for v in below if v < t), t)

    def _inputs(self, rows: I64, now: float, window_s: float, listen: NDArray[np.bool_],
                blocks: bool = True) -> LinkInputs:
        tr = self.tracker
        k, xbar, sent = tr.bins.window(rows, now, window_s)
        corr, var = self._gain
        xbar = np.where(k > 0, xbar + (self._rx_bias + corr)[None, :], 0.0)
        budget = tr.p.calibration_budget_db or 0.0
        extra = self.hearing.extra_var_db2() + np.maximum(var - budget**2, 0.0)
        sd = slow_sd(self.sigma, self.p, extra)
        # A band's gain is learned through the model: where the beacons say the model does not explain them, neither
        # its narrow sd (`_band_sd`) nor its mean is used (alt null: 6 false breaches with the mean kept, 2 without).
        gain = np.zeros(len(rows)) if self.beacon_fit.misfits() else self.gains.mean[rows]
        x = LinkInputs(k=k, xbar=xbar, n_sent=sent, power=tr.power[rows] + gain,
                       sb=self._band_sd(rows), slow_sd=np.broadcast_to(sd, k.shape), fast_sd=self.hearing.fast_sd,
                       listen=listen, floor=self.hearing.floor,
                       logmiss=self.hearing.logmiss * self._miss_weight[:, None],
                       exponent=self.exponent.value(self.beacon_fit.value(tr.calibration.exponent)),
                       sets=self.cand.restrict(self.set_of_band[rows], k, sent, listen),
                       exponent_up=self.p.exponent_up, profile_above=self.p.profile_above)
        n_blk = self.clock.blocks(window_s) if blocks else 1
        if n_blk <= 1:
            return x
        # The beacons show a slow shadowing part that changes with time (correlation time τ): it is drawn
        # afresh per block, the rest (tied to the place, model and calibration error) stays held.
        var_v = min(self.clock.var_v, self.sigma**2 * self.p.slow_fraction)
        held = np.sqrt(np.maximum(sd**2 - var_v, 0.0))
        kb, xb, nsb = tr.bins.window_blocks(rows, now, window_s, n_blk)
        xb = np.where(kb > 0, xb + (self._rx_bias + corr)[None, :, None], 0.0)
        return replace(x, slow_sd=np.broadcast_to(held, k.shape), kb=kb, xb=xb, nsb=nsb,
                       blk_sd=np.full(k.shape, math.sqrt(var_v)))

    def _fit_beacons(self, now: float) -> None:
        """Fold the last calibration round of every beacon pair into the censored exponent fit (`beacon_exponent`)."""
        bf, tr = self.beacon_fit, self.tracker
        rows = np.asarray(tr.calibration.beacon_idx, dtype=np.int64)
        if not bf.p.learn or not len(rows):
            return
        k, xbar, sent = tr.bins.window(rows, now, tr.p.calibrate_every_s)
        # A receiver whose floor is not measured yet is left out: its assumed -90 dBm floor explains every miss of
        # a long pair, whose heard up-fades then read it high (the exponent 0.1 low after the first minute).
        listen = (np.array(tr.rx_last) > now - 5.0) & self.hearing.measured
        # The fit reads levels as stored (offset-corrected, no learned gain: it learns its own), so each
        # receiver's miss table is moved back by what the window test adds to its levels. Misses are not weighed
        # by the burst dispersion (`miss_bursts`) as in the window test: weighing them and not the heard adverts
        # reads every censored pair high, and at start-up (D ≥ 3) that read the exponent 0.2 low.
        logmiss = tables_shifted(self.hearing.logmiss, self.hearing.floor - self.hearing.raw_floor)
        slow = self.sigma**2 * self.p.slow_fraction
        share = bf.p.round_share
        if share is None and self.clock.pairs[-1] < self.clock.p.min_pairs:
            share = bf.p.round_share_unknown  # the clock has not measured yet: "nothing changes" is not the default
        var_v = min(self.clock.var_v, slow) if share is None else share * slow
        bf.add(now, k, xbar, sent, listen, logmiss, self.hearing.fast_sd, math.sqrt(var_v))
        held = math.sqrt(max(slow + self.p.model_error_db**2 - var_v, 0.0))
        bf.fit(tr.power[rows], held)

    def _learn_bursts(self, now: float, rows: I64, listen: NDArray[np.bool_]) -> None:
        """Fold the last minute of `rows`' links into each receiver's miss dispersion (`miss_bursts`)."""
        b = self.bursts
        if not b.p.learn or not len(rows):
            return
        tr = self.tracker
        kb, xb, nsb = tr.bins.window_blocks(rows, now, b.p.span_s, b.blocks)
        k = kb.sum(axis=2)
        corr, _ = self._gain
        span_mean = (kb * xb).sum(axis=2) / np.maximum(k, 1.0)  # the span's mean level, from its blocks
        xbar = np.where(k > 0, span_mean + (self._rx_bias + corr)[None, :], -math.inf)
        b.add(now, kb, xbar, nsb, self.hearing.floor, listen)

    def due(self, now: float, out_m: Mapping[int, float], rx_count: Mapping[int, int], active: set[int]) -> I64:
        """Dense indices of the bands to test over the long windows this tick."""
        tr = self.tracker
        sec = math.floor(now)
        ls = tr.last_sample[:self.n]
        longest = max(self.windows)
        heard = ls > now - longest
        idx = np.arange(self.n)
        suspect = (ls <= now - self.s.recent_unheard_s) | (self.last_lr > self.p.threshold / 4)
        for i, o in out_m.items():
            if o > self.s.suspect_out_m or rx_count.get(i, 0) <= 2:
                suspect[i] = True
        for i in active:
            suspect[i] = True
        due = np.where(suspect, (sec + idx) % self.s.suspect_every_s == 0, (sec + idx) % self.s.others_every_s == 0)
        due |= self.last_lr >= self.p.threshold * self.s.hot_share
        return np.asarray(np.nonzero(heard & due)[0], dtype=np.int64)

    def tick(self, now: float, rows: I64, clear_rows: I64, fix_out_m: Mapping[int, float]) -> dict[int, Verdict]:
        """Test `rows` over the long windows and `clear_rows` over the clear window; learn from confident ones."""
        tr = self.tracker
        if now >= self._next_floor:
            self._next_floor = now + tr.p.calibrate_every_s
            self._rx_bias, rx_var = self.beacon_fit.rx_bias(tr.calibration.rx_bias, tr.calibration.link_var_db2())
            self._gain = self.hearing.corrections(rx_var)
            self.hearing.note_deviation(self._rx_bias + self._gain[0], self._gain[1])
            self.hearing.update_floors(tr.rx_hist, tr.floor_dbm, self._rx_bias + self._gain[0])
            if self.loss.p.learn:
                self.hearing.set_loss(self.loss.value())
            if self.bursts.p.learn:
                self._miss_weight = 1.0 / self.bursts.value()
            # An unmeasured floor is taken keen here: a link nearer the true floor than it looks loses its
            # low samples, which shrinks the measured change with time (fewer blocks), never grows it.
            self.clock.add(tr.bins, now, np.where(self.hearing.measured, self.hearing.raw_floor, -100.0))
            self._fit_beacons(now)
        if self.gains.p.learn and self.gains.p.place_tau_s > 0:
            fresh = np.nonzero(tr.last_xy_ts[:self.n] >= now - 1.0)[0]
            self.places.update(now, fresh, tr.last_xy[fresh], self.gains.p.place_tau_s)
        listen = np.array(tr.rx_last) > now - 5.0
        out: dict[int, Verdict] = {}
        lr_best = np.full(len(rows), np.nan)
        xy = np.full((len(rows), 2), np.nan)
        om = np.full(len(rows), np.nan)
        if not listen.any():
            rows = rows[:0]  # nobody is listening (node down, or a replay past its data): nothing to test
            clear_rows = clear_rows[:0]
        if len(rows):
            # The longest window first; the shorter ones only where it is not confidently inside
            # (a walker who has just left: the long window still holds inside time).
            order = sorted(self.windows, reverse=True)
            x = self._inputs(rows, now, order[0], listen, blocks=False)
            decide = self._thresholds()
            o0 = self._offset[order[0]]
            res = run_test(self.cand, x, decide=_shifted(decide, o0))
            lr_best, xy, om = self._with_blocks(rows, now, order[0], listen, res, decide)
            w_best = np.full(len(rows), order[0])
            self._learn(now, rows, x, res.b_mean, res.in_xy)
            self._learn_gains(now, rows, x, res.lr - o0)
            self._learn_exponent(now, rows, x, res.lr - o0, res.ll_in, fix_out_m)
            look = now - self._loss_last[rows] >= self.loss.p.every_s
            if self.loss.p.learn and look.any():
                self.loss.add(now, x.k[look], x.xbar[look], x.n_sent[look], self.hearing.floor, listen)
                self._loss_last[rows[look]] = now
                self._learn_bursts(now, rows[look], listen)
            more = np.nonzero(~(res.lr - o0 <= self.s.shorter_below))[0]
            every = np.arange(len(rows)) if self.s.shortest_always else more
            for w in order[1:]:
                pick = every if w == order[-1] else more
                if not len(pick):
                    continue
                sub = rows[pick]
                r2 = run_test(self.cand, self._inputs(sub, now, w, listen, blocks=False),
                              decide=_shifted(decide, self._offset[w]))
                lr2, xy2, om2 = self._with_blocks(sub, now, w, listen, r2, decide)
                better = ~np.isnan(lr2) & ~(lr2 <= lr_best[pick])
                idx = pick[better]
                lr_best[idx] = lr2[better]
                xy[idx] = xy2[better]
                om[idx] = om2[better]
                w_best[idx] = w
            self.last_lr[rows] = lr_best
            self.null.add(now, rows, lr_best)  # the statistic before φ and the receiver guard
            lr_best = self._guarded(now, rows, clear_rows, lr_best, w_best, listen)
            lr_best = lr_best / self.null.scale  # the rules' threshold is thereby 13·φ
        clear: dict[int, float] = {}
        if len(clear_rows):
            res = run_test(self.cand, self._inputs(clear_rows, now, self.p.clear_window_s, listen))
            clear = dict(zip(clear_rows.tolist(), res.lr.tolist(), strict=True))
        seen: set[int] = set()
        for j, i in enumerate(rows.tolist()):
            seen.add(i)
            out[i] = Verdict(float(lr_best[j]), clear.get(i, math.nan), float(xy[j, 0]), float(xy[j, 1]), float(om[j]))
        for i, c in clear.items():
            if i not in seen:
                out[i] = Verdict(math.nan, c, math.nan, math.nan, math.nan)
        return out

    def _guarded(self, now: float, rows: I64, active: I64, lr: F64, window: F64, listen: NDArray[np.bool_]) -> F64:
        """A band not yet in breach must reach the threshold with any one receiver's gain left free
        (`receiver_guard`); bands in breach keep their statistic (the clear rule reads it)."""
        if not self.guard.on:
            return lr
        t = self.p.threshold * float(self.null.scale)  # raw statistics: the rules read lr / φ against the threshold
        fresh = ~np.isin(rows, active)
        if not (fresh & (lr >= t)).any():
            return lr
        suspects = ~self.hearing.confirmed_ok() if self.guard.exempt_judged_ok else np.ones(len(listen), dtype=bool)
        out = lr.copy()
        for w, o in self._offset.items():  # the guard recomputes raw statistics: compare them at the window's own level
            sub = np.nonzero(fresh & (window == w))[0]
            if len(sub):
                out[sub] = guard(self.cand, lambda r, w: self._inputs(r, now, w, listen), rows[sub], lr[sub] + o,
                                 window[sub], t + o, suspects, self.guard) - o
        return out

    def _with_blocks(self, rows: I64, now: float, window_s: float, listen: NDArray[np.bool_],
                     held: WindowResult, decide: tuple[float, ...]) -> tuple[F64, F64, F64]:
        """The held test's (lr, out_xy, out_m), redone with the window cut into blocks (`shadow_clock`) for
        the rows whose held statistic is above `blocks_above_share` of the threshold: blocks sharpen the
        evidence in the direction it already points, so a band the held test puts inside is not worth it.
        The statistic is returned less the window's threshold offset (`WindowParams.threshold_extra`)."""
        o = self._offset[window_s]
        lr, xy, om = held.lr - o, held.out_xy.copy(), held.out_m.copy()
        up = np.nonzero(lr > self.p.threshold * self.s.blocks_above_share)[0]
        if self.clock.blocks(window_s) <= 1 or not len(up):
            return lr, xy, om
        r = run_test(self.cand, self._inputs(rows[up], now, window_s, listen), decide=_shifted(decide, o))
        lr[up], xy[up], om[up] = r.lr - o, r.out_xy, r.out_m
        return lr, xy, om

    def _learn(self, now: float, rows: I64, x: LinkInputs, b_mean: F64, in_xy: F64) -> None:
        """Receiver residuals from every tested band (their median is the guard, `Hearing.note_residuals`)."""
        heard_links = (x.k > 0).sum(axis=1)
        for j, i in enumerate(rows.tolist()):
            if heard_links[j] < 3:
                continue
            # Receiver residuals from every band, whatever the breach test says: a receiver that reads
            # low pulls the bands near it towards the fence, and a "confidently inside" gate kept exactly
            # those out (alt L-wing, a receiver 5.2 dB low was learned 4.4 dB high). The median over
            # hundreds of bands (`Hearing.note_residuals`) is what keeps a real escapee from mattering.
            if now - self._resid_last[i] < self.s.gain_every_s:
                continue  # overlapping windows share their shadowing: one look per band per 20 s
            self._resid_last[i] = now
            d = np.linalg.norm(self.tracker.rx_pos - in_xy[j][None, :], axis=1)
            model = x.power[j] + b_mean[j] - x.exponent * 10.0 * np.log10(np.maximum(d, self.p.min_distance_m))
            ok = (x.k[j] >= self.s.residual_min_k) & (x.xbar[j] > self.hearing.floor + self.s.residual_above_floor_db)
            ok &= x.k[j] >= 0.25 * x.n_sent[j]  # a link heard only now and then reads high (the lucky samples)
            if ok.sum() >= 3:
                r = np.nonzero(ok)[0]
                # In the beacon frame (without this module's own correction), so the running mean is the
                # receiver's whole remaining error, not what is left after correcting it.
                resid = x.xbar[j][r] - self._gain[0][r] - model[r]
                # Position and band gain absorb what all links share; a receiver's own error is what
                # remains after removing the window's median residual.
                self.hearing.note_residuals(r.astype(np.int64), resid - np.median(resid))

    def _learn_gains(self, now: float, rows: I64, x: LinkInputs, lr: F64) -> None:
        """Each due band's window likelihood at every gain of `GRID_DB`, its position free (`band_gain`); with
        `GainParams.inside`, only confidently-inside windows (`lr`), over the band's own inside positions."""
        g = self.gains
        if not g.p.learn:
            return  # turned off: nothing on the tick's path
        ok = ((x.k > 0).sum(axis=1) >= g.p.min_links) & g.due(rows, now)
        if g.p.inside:
            ok &= lr <= self.p.confident_inside
        pick = g.choose(rows, ok)
        if not len(pick):
            return
        n_g = len(GRID_DB)
        rep = np.repeat(pick, n_g)
        y = replace(x.take(rep), power=self.tracker.power[rows[rep]] + np.tile(GRID_DB, len(pick)),
                    sb=np.full(len(rep), SMOOTH_DB), exponent_up=(0.0,))
        if g.p.inside:
            res = run_test(self.cand, y, inside_only=True)
        else:
            if self._free is None:
                self._free = self.cand.position_free()
            res = run_test(self._free, replace(y, sets=np.zeros(len(rep), dtype=np.int64)), inside_only=True)
        ll = res.ll_in.reshape(len(pick), n_g)
        # The place the evidence is kept under: where the band is (its averaged fixes) where known, else where the
        # fit puts it at the best gain of its curve.
        best = np.argmax(np.where(np.isfinite(ll), ll, -np.inf), axis=1)
        xy = res.in_xy.reshape(len(pick), n_g, 2)[np.arange(len(pick)), best]
        if g.p.place_tau_s > 0:
            track = self.places.xy[rows[pick]]
            xy = np.where(np.isfinite(track).all(axis=1)[:, None], track, xy)
        g.add(rows[pick], now, ll, xy)

    def _learn_exponent(self, now: float, rows: I64, x: LinkInputs, lr: F64, ll_in: F64,
                        fix_out_m: Mapping[int, float]) -> None:
        """The exponent's likelihood at n̂ ± h from a few confidently-inside windows (`window_exponent`)."""
        ep = self.exponent.p
        if not ep.learn:
            return
        ok = (lr <= self.p.confident_inside) & ((x.k > 0).sum(axis=1) >= 3) & np.isfinite(ll_in)
        ok &= now - self._exp_last[rows] >= ep.every_s
        pick = [j for j in np.nonzero(ok)[0].tolist() if fix_out_m.get(int(rows[j]), 0.0) <= -1.0][:ep.max_rows]
        if not pick:
            return
        idx = np.array(pick, dtype=np.int64)
        sub = x.take(idx)
        if len(x.exponent_up) > 1:  # the learner needs the likelihood at one exponent each, not profiled
            sub = replace(sub, exponent_up=(0.0,))
            ll_mid = run_test(self.cand, sub, inside_only=True).ll_in
        else:
            ll_mid = ll_in[idx]
        lo = run_test(self.cand, replace(sub, exponent=x.exponent - ep.step), inside_only=True).ll_in
        hi = run_test(self.cand, replace(sub, exponent=x.exponent + ep.step), inside_only=True).ll_in
        self.exponent.add(now, x.exponent, lo, ll_mid, hi)
        self._exp_last[rows[idx]] = now

    def snapshot(self) -> DetectorState:
        """Every learner's state (`DetectorState`)."""
        return DetectorState(self.gains.snapshot(), self.hearing.snapshot(), self.loss.snapshot(),
                             self.bursts.snapshot(), self.exponent.snapshot(), self.null.snapshot(),
                             self.clock.snapshot(), self.beacon_fit.snapshot())

    def restore(self, s: DetectorState) -> None:
        """Every learner from `s`; the corrections, floors and tables are recomputed at the next tick."""
        self.gains.restore(s.gains)
        self.hearing.restore(s.hearing)
        self.loss.restore(s.loss)
        self.bursts.restore(s.bursts)
        self.exponent.restore(s.exponent)
        self.null.restore(s.null)
        self.clock.restore(s.clock)
        self.beacon_fit.restore(s.beacon_fit)
        # The floors from the tracker's (restored) levels now: the first tick's corrections read which receivers
        # are deaf (their gain is not corrected from the bands), and that needs measured floors.
        tr = self.tracker
        self.hearing.update_floors(tr.rx_hist, tr.floor_dbm, tr.calibration.rx_bias)
        self._next_floor = -math.inf

    def receivers(self, now: float) -> dict[str, dict[str, float | int | str]]:
        """Receiver health for telemetry, doctor and plan."""
        alive = np.array(self.tracker.rx_last) > now - self.tracker.p.rx_alive_s
        return self.hearing.report(alive)


def _shifted(decide: tuple[float, ...], offset: float) -> tuple[float, ...]:
    """Decide-mode levels for a window whose statistic is read less `offset` (its threshold is offset higher)."""
    return tuple(v + offset for v in decide) if offset else decide


def rows_of(bands: Sequence[int], index: Mapping[int, int]) -> I64:
    """Dense indices of band IDs."""
    return np.array([index[b] for b in bands], dtype=np.int64)
