"""The window breach test's pieces: the compiled kernel against its numpy oracle, the per-second bins,
band-gain learning and its guard, receiver floors and health, and the window rule (clock injected)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from edge.bands.advert_bins import AdvertBins
from edge.bands.band_gain import GRID_DB, BandGains, GainParams, PlaceTrack
from edge.bands.hearing import Hearing, HearingParams, miss_table
from edge.bands.rules import BandRules, Decision, RuleParams
from edge.bands.window_test import Candidates, LinkInputs, WindowParams, link_loglik, run_reference, run_test
from protocols.site_config import SiteConfig

P = RuleParams(breach_dwell_s=20, clear_dwell_s=10, window_threshold=16.0, window_clear=2.0)


def _site() -> SiteConfig:
    return SiteConfig.model_validate({
        "site": {"id": "t"},
        "zones": [{"id": "a", "kind": "permitted", "polygon": [[0, 0], [20, 0], [20, 14], [0, 14]]}],
        "receivers": [{"id": "in", "position": [10, 7], "source": "sim"},
                      {"id": "s", "position": [10, -15], "source": "sim"},
                      {"id": "n", "position": [10, 29], "source": "sim"},
                      {"id": "e", "position": [35, 7], "source": "sim"}],
        "bands": [{"id": 1, "allowed_zones": ["a"]}, {"id": 2, "allowed_zones": ["a"]}],
    })


def _inputs(site: SiteConfig, cand: Candidates, xy: list[tuple[float, float]], rng: np.random.Generator,
            window: int = 20, deaf: int | None = None, n_true: float = 2.7) -> LinkInputs:
    """Samples of bands standing at `xy` over one window, drawn from the same model the test assumes."""
    rx = np.array([r.position for r in site.receivers], dtype=float)
    floor = np.full(len(rx), -97.0)
    if deaf is not None:
        floor[deaf] = -85.0
    k = np.zeros((len(xy), len(rx)))
    xbar = np.zeros_like(k)
    for i, p in enumerate(xy):
        d = np.maximum(np.linalg.norm(rx - np.array(p), axis=1), 0.5)
        mean = -59.0 - 10.0 * n_true * np.log10(d) + rng.normal(0, 3.0, len(rx))
        s = mean[None, :] + rng.normal(0, 3.0, (window, len(rx)))
        heard = (s > floor + 3.0) & (rng.random(s.shape) < 0.85)
        k[i] = heard.sum(axis=0)
        xbar[i] = np.where(k[i] > 0, np.where(heard, s, 0).sum(axis=0) / np.maximum(k[i], 1), 0.0)
    logmiss = np.stack([miss_table(f, 3.0, HearingParams()) for f in floor])
    m = len(xy)
    return LinkInputs(k=k, xbar=xbar, n_sent=np.full(m, float(window)), power=np.full(m, -59.0), sb=np.full(m, 1.5),
                      slow_sd=np.full((m, len(rx)), 3.5), fast_sd=3.0, listen=np.ones(len(rx), dtype=bool),
                      floor=floor, logmiss=logmiss, exponent=2.7, sets=np.zeros(m, dtype=np.int64))


def test_kernel_matches_the_numpy_oracle_and_separates_inside_from_outside() -> None:
    site = _site()
    p = WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0)
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), p)
    rng = np.random.default_rng(3)
    pts = [(10.0, 7.0), (2.0, 12.0), (19.0, 1.0), (10.0, -18.0), (40.0, 10.0)]
    x = _inputs(site, cand, pts, rng)
    fast, ref = run_test(cand, x), run_reference(cand, x)
    # Tabulated (1 dB, linear interpolation) vs exact: the statistic agrees to a fraction of a unit.
    # The kernel skips outside points that cannot explain the strongest level: there it reports -1000.
    sure = ref.lr < -500
    assert (fast.lr[sure] <= -500).all()
    assert np.allclose(fast.lr[~sure], ref.lr[~sure], rtol=0.01, atol=0.6), (fast.lr, ref.lr)
    assert np.allclose(fast.b_mean[:3], ref.b_mean[:3], atol=0.15)  # (outside rows: the best inside point may differ)
    assert np.allclose(fast.ll_in, ref.ll_in, rtol=0.01, atol=0.3), (fast.ll_in, ref.ll_in)
    inner = run_test(cand, x, inside_only=True)
    assert np.allclose(inner.ll_in[:3], fast.ll_in[:3], atol=1e-6)  # the same inside points, the same best
    assert (fast.lr[:3] < 4.0).all()  # inside
    assert (fast.lr[3:] > 16.0).all(), fast.lr  # 18 and 20 m outside, standing for 20 s, each near an outside receiver
    assert (fast.out_m[3:] > 10.0).all()


def test_exponent_profiled_in_both_hypotheses() -> None:
    """A calibrated exponent read low (the beacons' truncation bias) must not push fence-standers out: with
    the exponent profiled over (n, n + 0.2, n + 0.4) the kernel still matches the oracle, no statistic rises,
    the fence-standers' fall, and a band standing 18-20 m out is still far above the threshold."""
    site = _site()
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), WindowParams())
    rng = np.random.default_rng(11)
    fence = [(10.0, 13.5), (19.5, 7.0), (0.5, 3.0), (10.0, 0.5)] * 3
    pts = [*fence, (10.0, -18.0), (40.0, 10.0)]
    x = _inputs(site, cand, pts, rng, window=20, n_true=3.1)

    def at(**kw: object) -> LinkInputs:
        return LinkInputs(**{**{f: getattr(x, f) for f in x.__dataclass_fields__}, "exponent": 2.6, **kw})

    fixed, fast, ref = run_test(cand, at()), run_test(cand, at(exponent_up=(0.0, 0.2, 0.4))), \
        run_reference(cand, at(exponent_up=(0.0, 0.2, 0.4)))
    sure = ref.lr < -500
    assert np.allclose(fast.lr[~sure], ref.lr[~sure], rtol=0.01, atol=1.0), (fast.lr, ref.lr)
    assert np.allclose(fast.ll_in, ref.ll_in, rtol=0.01, atol=0.5)
    # Exactly the best of the three single-exponent tests, per hypothesis (the same tables, the same points).
    one = [run_test(cand, at(exponent_up=(u,))) for u in (0.0, 0.2, 0.4)]
    ll_in = np.max([r.ll_in for r in one], axis=0)
    ll_out = np.max([r.ll_in + r.lr / 2 for r in one], axis=0)
    assert np.allclose(fast.ll_in, ll_in, atol=1e-9)
    assert np.allclose(fast.lr, 2 * (ll_out - ll_in), atol=1e-9)
    # Gated: rows the calibrated exponent already puts confidently inside keep that result, the rest are profiled.
    gated = run_test(cand, at(exponent_up=(0.0, 0.2, 0.4), profile_above=-2.0))
    low = one[0].lr <= -2.0
    assert low.any() and (~low).any()
    assert np.allclose(gated.lr[low], one[0].lr[low], atol=1e-9)
    assert np.allclose(gated.lr[~low], fast.lr[~low], atol=1e-9)
    n_f = len(fence)
    # Profiling adds the same freedom to both sides: a fence-stander's statistic falls on average and
    # its worst case is no higher; the escapees stay clear of the threshold.
    assert fast.lr[:n_f].mean() < fixed.lr[:n_f].mean() - 1.0, (fast.lr[:n_f], fixed.lr[:n_f])
    assert fast.lr[:n_f].max() <= fixed.lr[:n_f].max() + 0.6
    assert (fast.lr[n_f:] > 16.0).all(), fast.lr[n_f:]


def test_far_outside_candidates_only_for_a_band_no_receiver_hears_well() -> None:
    site = _site()
    p = WindowParams(far_m=30.0, far_heard_share=0.5)
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), p)
    full = np.arange(cand.lo[0], cand.hi[0])
    assert cand.out_m[full].max() > 100.0  # the far ring is there for bands nobody hears
    listen = np.array([True, True, True, False])
    k = np.array([[12.0, 0.0, 0.0, 0.0],  # heard well by the inside receiver
                  [3.0, 2.0, 0.0, 0.0],  # heard now and then only
                  [0.0, 0.0, 0.0, 15.0]])  # heard well only by a receiver that is not listening
    sets = cand.restrict(np.zeros(3, dtype=np.int64), k, np.full(3, 20.0), listen)
    assert sets.tolist() == [cand.n_full, 0, 0]
    near = np.arange(cand.mid[cand.n_full], cand.hi[cand.n_full])
    assert len(near) and cand.out_m[near].max() <= 30.0
    assert cand.mid[cand.n_full] - cand.lo[cand.n_full] == cand.mid[0] - cand.lo[0]  # same inside points


def test_unheard_band_gives_no_test_and_a_deaf_receiver_is_not_evidence() -> None:
    site = _site()
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), WindowParams())
    x = _inputs(site, cand, [(10.0, 7.0)], np.random.default_rng(1))
    silent = LinkInputs(**{**{f: getattr(x, f) for f in x.__dataclass_fields__}, "k": np.zeros_like(x.k)})
    assert np.isnan(run_test(cand, silent).lr[0])
    # A band at the north fence, with the inside receiver deaf (floor -85): its misses must not push
    # the band outside, because its own floor is used.
    rng = np.random.default_rng(7)
    lrs = [run_test(cand, _inputs(site, cand, [(10.0, 13.0)], rng, deaf=0)).lr[0] for _ in range(20)]
    assert max(lrs) < 16.0


def test_link_loglik_counts_misses_through_the_hearing_curve() -> None:
    lm = miss_table(-97.0, 3.0, HearingParams())
    mu = np.array([-110.0, -95.0, -80.0])
    ll = link_loglik(0.0, 0.0, 20.0, 3.0, 3.0, lm, mu)
    # Twenty misses: likely far below the floor, unlikely well above it.
    assert ll[0] > -0.5 > ll[1] > ll[2]


def test_advert_bins_window_counts_means_and_interval() -> None:
    bins = AdvertBins(2, 3, span_s=16)
    for t in range(100, 120):
        bins.add(0, 1, t + 0.3, -80.0 - (t % 2))
        bins.note_counter(0, t + 0.3, 5000 + t - 100)
    bins.add_many(np.array([1, 1]), np.array([2, 2]), np.array([118.5, 119.5]), np.array([-90.0, -92.0]))
    k, xbar, sent = bins.window(np.array([0, 1]), 119.9, 10.0)
    assert k[0, 1] == 10 and k[0, 0] == 0 and abs(xbar[0, 1] + 80.5) < 1e-9
    assert k[1, 2] == 2 and abs(xbar[1, 2] + 91.0) < 1e-9
    # The newest second (119) is 0.9 s old: it counts for 0.9 of an advert, not a whole one missed.
    assert abs(sent[0] - 9.9) < 0.2
    assert abs(sent[1] - 1.9) < 1e-9  # first heard in second 118: nothing was sent before that
    for t in range(120, 200):  # a band advertising every 1.25 s
        bins.note_counter(1, t * 1.25, t)
    assert abs(bins.interval[1] - 1.25) < 0.02
    k, _, _ = bins.window(np.array([0]), 140.0, 10.0)  # older than the ring: gone
    assert k.sum() == 0


def _curve(mean: float, sd: float) -> NDArray[np.float64]:
    return np.asarray(-0.5 * ((GRID_DB - mean) / sd) ** 2)


def test_band_gain_counts_places_not_windows_and_learns_relative_to_the_shared_part() -> None:
    p = GainParams(prior_sd_db=2.0, min_sd_db=0.5, max_abs_db=8.0, every_s=20.0, temper=1.0, place_m=8.0,
                   max_places=24, shared_min_bands=10, settle_s=0.0, learn=True)
    g = BandGains(13, p)
    assert float(g.sd(np.array([0]))[0]) == pytest.approx(2.0)  # no evidence: the prior
    rows = np.arange(13)
    t = 0.0
    for k in range(10):  # bands 0-11 walk through ten places; band 12 stands in one place the whole time
        xy = np.array([[8.0 * k + 1.0, 3.0]] * 12 + [[1.0, 1.0]])
        # Every band's fit reads 4 dB low (what all share: an exponent's bias), band 0 another 6 dB lower.
        ll = np.stack([_curve(-10.0, 2.5)] + [_curve(-4.0, 2.5)] * 12)
        assert g.due(rows, t).all()
        g.add(rows, t, ll, xy)
        assert not g.due(rows, t + 19.0).any()  # at most one window per every_s
        t += 20.0
    assert g.shared_db == pytest.approx(-4.0)
    # A parabola through three points of a quadratic is the quadratic: the Gaussian posterior exactly.
    walked = 10 / 2.5**2
    assert g.mean[0] == pytest.approx(-6.0 * walked / (walked + 0.25), abs=1e-6)  # far from the prior: still found
    assert g.mean[1] == pytest.approx(0.0, abs=1e-6)  # a typical band keeps the model's own level
    assert float(g.sd(np.array([1]))[0]) == pytest.approx(1.0 / math.sqrt(walked + 0.25), abs=1e-6)
    # Ten windows in one place are one window's evidence: a stander's shadowing is not its gain.
    stood = 1 / 2.5**2
    assert float(g.sd(np.array([12]))[0]) == pytest.approx(1.0 / math.sqrt(stood + 0.25), abs=1e-6)
    g.add(np.array([0]), t, np.array([[np.nan] * len(GRID_DB)]), np.array([[0.0, 0.0]]))  # nothing heard: skipped
    assert g.updates[0] == 10


def test_place_track_holds_a_stander_in_one_place_and_follows_a_walker() -> None:
    # A stander's fixes scatter ±15 m a tick (as the fit's best point did over 4-15 cells of 8 m); a walker goes 1 m/s.
    rng = np.random.default_rng(5)
    track = PlaceTrack(3)
    cells: set[tuple[int, int]] = set()
    for s in range(600):
        fixes = np.array([[20.0, 20.0], [float(s), 0.0], [np.nan, np.nan]]) + rng.normal(0.0, 15.0, (3, 2))
        track.update(float(s), np.arange(3), fixes, tau_s=60.0)
        if s >= 120:
            cells.add((math.floor(track.xy[0, 0] / 8.0), math.floor(track.xy[0, 1] / 8.0)))
    assert np.linalg.norm(track.xy[0] - 20.0) < 6.0 and len(cells) <= 2  # its raw fixes: 80 cells
    assert 599.0 - 60.0 - 15.0 < track.xy[1, 0] < 599.0 - 60.0 + 15.0  # a minute behind a steady walker
    assert np.isnan(track.xy[2]).all()  # never fixed: unknown, and the learner keeps the fit's point


def test_band_gain_defaults_stay_bounded() -> None:
    g = BandGains(10, GainParams(learn=True, temper=1.0))
    rows = np.arange(10)
    assert not g.due(rows, 0.0).any()  # the first minute of the test: no look (the model is still settling)
    t = 60.0
    for k in range(60):  # band 0: a curve still rising at the grid's edge; the others: typical, from many places
        curves = np.stack([GRID_DB * 5.0] + [_curve(0.0, 2.0)] * 9)
        g.add(rows, t, curves, np.array([[8.0 * k, 0.0]] * 10))
        t += 20.0
    assert g.mean[0] == pytest.approx(8.0)  # held at max_abs_db
    assert float(g.sd(np.array([0]))[0]) == pytest.approx(2.0)  # no maximum inside the grid: the prior's sd
    sd = g.sd(np.arange(1, 10))
    assert (sd >= g.p.min_sd_db - 1e-9).all() and sd.min() == pytest.approx(g.p.min_sd_db)  # narrowed to the floor
    assert not BandGains(1, GainParams(learn=False, settle_s=0.0)).due(np.array([0]), 100.0).any()  # turned off
    few = BandGains(9, GainParams(learn=True, settle_s=0.0))  # fewer bands than the shared part needs: nothing moves
    for k in range(5):
        few.add(np.arange(9), 20.0 * k, np.stack([_curve(-6.0, 1.0)] * 9), np.array([[8.0 * k, 0.0]] * 9))
    assert (few.mean == 0.0).all() and few.updates.min() == 5


def test_hearing_floors_per_receiver_and_health_report() -> None:
    h = Hearing(["a", "b", "c", "d"], 3.0, HearingParams(min_samples=100, gain_min_links=10))
    hist = np.zeros((4, 141), dtype=np.int64)
    for r, floor in enumerate((-99, -98, -99, -84)):
        hist[r, floor + 140: floor + 140 + 30] = 20
    h.update_floors(hist, -99.0)
    assert list(h.floor) == [-99.0, -98.0, -99.0, -84.0]
    h.note_residuals(np.array([2] * 30), np.full(30, -5.0))
    h.note_residuals(np.array([0, 1] * 15), np.zeros(30))
    corr, var = h.corrections(np.full(4, 36.0))  # beacons pin nobody: the bands' estimate wins
    assert 4.0 < corr[2] < 5.0 and corr[0] == 0.0 and var[3] == 36.0
    # The residuals' censored reference leaves them an error no number of them removes (`resid_bias_sd_db`).
    bias_var = h.p.resid_bias_sd_db**2
    assert 1.0 / (1.0 / 36.0 + 1.0 / bias_var) < var[2] < 36.0 / 4.0
    pinned, pinned_var = h.corrections(np.full(4, bias_var))  # beacons as sure as residuals can be: under half
    assert 0.4 * corr[2] < pinned[2] < 0.6 * corr[2] and pinned_var[2] < var[2]
    h.note_deviation(np.array([0.5, -1.0, corr[2], 0.0]))
    rep = h.report()
    assert rep["d"]["state"] == "deaf" and rep["c"]["state"] == "gain_off" and rep["a"]["state"] == "ok"
    extra = h.extra_var_db2()
    assert extra[2] > 0.0 and extra[0] == 0.0
    assert h.report(np.array([True, False, True, True]))["b"]["state"] == "silent"


def test_receiver_gain_is_a_median_and_a_deaf_receiver_keeps_the_beacons_gain() -> None:
    h = Hearing(["a", "b", "c", "d"], 3.0, HearingParams(min_samples=100, gain_min_links=10))
    hist = np.zeros((4, 141), dtype=np.int64)
    for r, floor in enumerate((-99, -98, -99, -85)):
        hist[r, floor + 140: floor + 140 + 30] = 20
    h.update_floors(hist, -99.0)
    # Receiver a reads 6 dB low in 90 windows; 10 windows of an escapee (inside explanation wrong) say +15.
    h.note_residuals(np.array([0] * 100), np.r_[np.full(90, -6.0), np.full(10, 15.0)])
    # The deaf receiver's links near its floor read high (only the lucky packets arrive).
    h.note_residuals(np.array([3] * 100), np.full(100, 6.0))
    corr, var = h.corrections(np.full(4, 36.0))
    assert 5.0 < corr[0] < 6.0  # the median: a mean would say 3.9
    assert corr[3] == 0.0 and var[3] == 36.0  # not corrected by its truncated links
    h.note_deviation(corr)
    rep = h.report()
    assert rep["a"]["state"] == "gain_off" and rep["d"]["state"] == "deaf"
    assert h.extra_var_db2()[3] == 0.0


def _states(out: list[Decision]) -> list[tuple[str, float]]:
    return [(d.state, d.ts) for d in out if d.type == "geofence_breach"]


def test_window_rule_raises_on_a_long_window_and_clears_after_the_clear_dwell() -> None:
    r = BandRules(1, P)
    nan = float("nan")
    out: list[Decision] = []
    for t in range(0, 10):
        out += r.on_window(float(t), 5.0, nan, (0.0, -30.0, 28.0))
    assert _states(out) == []
    out += r.on_window(10.0, 17.0, nan, (0.0, -30.0, 28.0))
    assert _states(out) == [("raised", 10.0)]
    d = next(x for x in out if x.type == "geofence_breach")
    assert d.detail["outside_m"] == 28.0 and "left_zone" in d.detail and d.detail["reason"] == "outside"
    out = []
    for t in range(11, 20):  # unheard (NaN): the breach stands
        out += r.on_window(float(t), nan, nan, (nan, nan, nan))
    for t in range(20, 26):  # back inside, but a doubtful tick restarts the clear dwell
        out += r.on_window(float(t), nan, 0.5, (nan, nan, nan))
    out += r.on_window(26.0, nan, 9.0, (nan, nan, nan))
    for t in range(27, 40):
        out += r.on_window(float(t), nan, 0.5, (nan, nan, nan))
    assert _states(out) == [("cleared", 37.0)]


def test_window_rule_start_up_margin_holds_then_fades() -> None:
    """+3 on the threshold for the first 90 s after the start, then fading to 0 over the next 60 s (the site's
    null scale φ, which the margin stands in for, moves at most 0.05 per 10 s once it has its samples)."""
    def first_raise(lr: float) -> float | None:
        r = BandRules(1, P)
        r.prime(0.0)
        out = [d for t in range(1, 200) for d in r.on_window(float(t), lr, 0.0, (0.0, -30.0, 28.0))]
        raised = [ts for state, ts in _states(out) if state == "raised"]
        return raised[0] if raised else None

    assert first_raise(19.0) == 1.0  # over threshold + margin: at once
    assert first_raise(18.5) == 100.0  # 16 + 3 × (1 - (t - 90) / 60) ≤ 18.5 from t = 100
    assert first_raise(18.96) == 91.0  # the margin starts to fade right after 90 s
    assert first_raise(17.5) == 120.0
    assert first_raise(16.0) == 150.0  # the whole margin gone


@pytest.mark.parametrize("lr", [15.9, float("nan")])
def test_window_rule_below_threshold_never_raises(lr: float) -> None:
    r = BandRules(1, P)
    out = [d for t in range(200) for d in r.on_window(float(t), lr, 0.0, (0.0, 0.0, 5.0))]
    assert _states(out) == []


def test_band_gain_looks_per_tick_are_bounded_oldest_first_and_every_band_gets_its_turn() -> None:
    g = BandGains(7, GainParams(learn=True, settle_s=0.0, every_s=0.0, max_per_tick=3))
    rows = np.array([6, 5, 4, 3, 2, 1, 0])
    looked: list[int] = []
    for tick in range(3):  # 7 bands due each tick, 3 looked at: after 3 ticks every band at least once
        pick = g.choose(rows, g.due(rows, float(tick)))
        assert len(pick) == 3 and (np.diff(pick) > 0).all()
        g.add(rows[pick], float(tick), np.stack([_curve(0.0, 2.0)] * 3), np.zeros((3, 2)))
        looked += rows[pick].tolist()
    assert set(looked) == set(range(7)) and g.deferred == 3 * 4
    # Never looked at first, then those looked at longest ago (ties in the order given).
    assert [set(looked[i:i + 3]) for i in (0, 3, 6)] == [{6, 5, 4}, {3, 2, 1}, {0, 6, 5}]
    assert set(rows[g.choose(rows, np.ones(7, dtype=bool))].tolist()) == {4, 3, 2}
    few = g.choose(rows, np.array([True, False, True, False, False, False, False]))
    assert few.tolist() == [0, 2]  # under the bound: every band that is due, nothing deferred
    assert g.state() == {"band_gains_learned": 7, "band_gain_looks_deferred": 3 * 4 + 4}
