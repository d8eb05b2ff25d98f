"""Per-window thresholds (issue 16, false-alarm side): each long window is read against its own threshold.

One threshold over windows of different length is a multiple test whose shortest window has the widest
null tail (docs/bands.md, "Thresholds per window"). `WindowParams.threshold_extra` raises one window's
threshold; the detector reports max_w (S_w - offset_w), so the rules keep one threshold, and the decide
mode (the kernel settles comparisons from bounds) must settle each window at its own shifted levels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.bands.pipeline import BandPipeline
from edge.bands.rules import BandRules, RuleParams
from edge.bands.window_detector import WindowDetector
from edge.bands.window_test import WindowParams, run_test
from edge.sim import RadioParams, Simulator
from edge.sim.escapes import make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import walking
from protocols.site_config import SiteConfig

OFFSET = 3.0


def test_offsets_need_one_entry_per_window() -> None:
    with pytest.raises(ValueError):
        WindowParams(threshold_extra=(1.0, 0.0))


def test_the_dwell_window_is_read_against_its_own_threshold(demo_site: SiteConfig) -> None:
    site = demo_site.model_copy(update={"bands": demo_site.bands[:6]})
    keys = site_demo_keys(site)
    sc = walking(site, 7)
    cross = 120.0
    sc.scripts[1001] = make_escape(site, 1001, 7, kind="walk", how="fence", cross_at=cross).script
    sim = Simulator(site, keys, seed=7, start_ts=1000.0, scenario=sc,
                    radio=RadioParams(shadowing_db=6.0, base_loss=0.15))
    pipe = BandPipeline(site, keys, node="t")
    det = pipe.detector
    assert isinstance(det, WindowDetector)
    t = det.p.threshold
    i = pipe.tracker.index[1001]
    row = np.array([i], dtype=np.int64)
    plain = det.p
    shifted = replace(plain, threshold_extra=(OFFSET, 0.0, 0.0))
    exact, decided = replace(det.s, exact_lr=True), replace(det.s, exact_lr=False)
    shortest, longest = min(det.windows), max(det.windows)

    def verdict(p: WindowParams, s: object, now: float) -> float:
        det.p, det.s = p, s  # type: ignore[assignment]
        det._offset = dict(zip(det.windows, p.threshold_extra, strict=True))
        return det.tick(now, row, row[:0], {})[i].lr

    dwell_alone: list[tuple[float, float, float]] = []
    for s in range(1, int(cross) + 40):
        now = sim.start_ts + s
        for o in sim.advance(now):
            pipe.observe_raw(o)
        pipe.tick(now)
        if s < cross:
            continue
        listen = np.array(det.tracker.rx_last) > now - 5.0
        raw = {w: float(run_test(det.cand, det._inputs(row, now, w, listen)).lr[0]) for w in det.windows}
        base = verdict(plain, exact, now)
        off = verdict(shifted, exact, now)
        off_decided = verdict(shifted, decided, now)
        det.p, det.s = plain, exact
        det._offset = dict(zip(det.windows, plain.threshold_extra, strict=True))
        # What the detector reports is the largest statistic less its window's offset (φ = 1 here), over the
        # windows it tests: the middle one only where the longest is above `shorter_below`.
        tested = {w: v for w, v in raw.items() if w in (shortest, longest) or raw[longest] > exact.shorter_below}
        want = max(v - (OFFSET if w == shortest else 0.0) for w, v in tested.items())
        assert off == pytest.approx(want, abs=0.05), (s, raw, off)
        assert base == pytest.approx(max(tested.values()), abs=0.05)
        # The decide mode settles every comparison at the shifted levels as the exact statistic does,
        # and at or above the threshold reports the statistic itself.
        det.s = decided
        levels = det._thresholds()
        det.s = exact
        assert levels and levels[-1] == t
        for level in levels:
            assert (off_decided >= level) == (off >= level), (s, level, off, off_decided)
        if off >= t:
            assert off_decided == pytest.approx(off, abs=1e-9)
        others = max(v for w, v in raw.items() if w != shortest)
        if t <= raw[shortest] < t + OFFSET and others < t:
            dwell_alone.append((raw[shortest], base, off))
    # The case the offsets are for happens in this escape's first seconds outside: the dwell window alone
    # between 13 and 16 raises a breach with one threshold and not with the dwell's own, higher one.
    assert dwell_alone, "no second with the dwell window alone between the thresholds"
    rules = RuleParams(window_threshold=t, window_startup_s=0.0)
    for dwell, base, off in dwell_alone:
        r0, r1 = BandRules(1001, rules), BandRules(1001, rules)
        assert [d.state for d in r0.on_window(500.0, base, float("nan"), (0.0, 0.0, 20.0))] == ["raised"], dwell
        assert r1.on_window(500.0, off, float("nan"), (0.0, 0.0, 20.0)) == [], dwell


def test_band_gain_sd_narrows_only_where_the_site_null_fits(demo_site: SiteConfig) -> None:
    """A learned band gain's narrow sd is used only while φ = 1; a wider null (or a misfit) takes the prior's."""
    pipe = BandPipeline(demo_site, site_demo_keys(demo_site), node="t")
    det = pipe.detector
    assert isinstance(det, WindowDetector)
    rows = np.arange(3, dtype=np.int64)
    prior = det.gains.p.prior_sd_db
    det.gains._sd[rows] = [1.0, 1.5, prior]
    det.beacon_fit.p = replace(det.beacon_fit.p, learn=True)
    det.beacon_fit.misfit = 0.0  # the beacons explained by the model
    assert det._band_sd(rows).tolist() == [1.0, 1.5, prior]
    det.null.scale = 1.05
    assert det._band_sd(rows).tolist() == [prior] * 3
    det.null.scale, det.null.misfit = 1.0, True
    assert det._band_sd(rows).tolist() == [prior] * 3
    det.null.misfit = False
    det.beacon_fit.misfit = 2.0 * det.beacon_fit.p.misfit_max  # the beacons say the model does not fit
    assert det._band_sd(rows).tolist() == [prior] * 3


def test_band_gain_inside_learns_from_confidently_inside_windows_only(demo_site: SiteConfig) -> None:
    """`GainParams.inside`: an escapee's gain stops learning once its windows are no longer confidently inside,
    while the residents' go on; position-free, the escapee's outside windows are learned from too."""
    site = demo_site.model_copy(update={"bands": demo_site.bands[:8]})
    keys = site_demo_keys(site)
    cross = 150.0
    updates: dict[bool, tuple[int, int, int]] = {}
    for inside in (True, False):
        sc = walking(site, 11)
        sc.scripts[1001] = make_escape(site, 1001, 11, kind="stand", how="gate", cross_at=cross).script
        sim = Simulator(site, keys, seed=11, start_ts=1000.0, scenario=sc,
                        radio=RadioParams(shadowing_db=4.0, base_loss=0.15))
        pipe = BandPipeline(site, keys, node="t")
        det = pipe.detector
        assert isinstance(det, WindowDetector)
        det.gains.p = replace(det.gains.p, learn=True, inside=inside, settle_s=0.0, every_s=10.0, shared_min_bands=2)
        i = pipe.tracker.index[1001]
        at_out = 0
        for s in range(1, 600):
            now = sim.start_ts + s
            for o in sim.advance(now):
                pipe.observe_raw(o)
            pipe.tick(now)
            if s == int(cross) + 90:  # the longest window holds outside time only from here on
                at_out = int(det.gains.updates[i])
        others = int(np.delete(det.gains.updates, i).min())
        updates[inside] = (at_out, int(det.gains.updates[i]), others)
    at_out, end, others = updates[True]
    assert at_out > 0 and end == at_out, updates  # nothing learned from outside
    assert others > at_out // 2, updates  # the residents go on being learned
    at_out, end, _ = updates[False]
    assert end > at_out, updates  # position-free: the outside windows count as well
