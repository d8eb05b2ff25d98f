"""The window test's schedule (issue 16, recall): the dwell-long window is tested for every tested band.

A person who left 10-20 s ago still has inside time in the longest window, whose statistic then
says "inside" while the dwell-long window already says "outside"; gated on the longest, the shorter
one was never computed, the band stayed on the slow schedule and its statistic peaked unseen.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.bands.pipeline import BandPipeline
from edge.bands.window_detector import WindowDetector
from edge.bands.window_test import run_test
from edge.sim import RadioParams, Simulator
from edge.sim.escapes import make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.scenarios import walking
from protocols.site_config import SiteConfig


def test_a_band_that_just_left_is_judged_on_its_dwell_long_window(demo_site: SiteConfig) -> None:
    site = demo_site.model_copy(update={"bands": demo_site.bands[:6]})
    keys = site_demo_keys(site)
    sc = walking(site, 7)
    cross = 120.0
    esc = make_escape(site, 1001, 7, kind="walk", how="fence", cross_at=cross)
    sc.scripts[1001] = esc.script
    sim = Simulator(site, keys, seed=7, start_ts=1000.0, scenario=sc,
                    radio=RadioParams(shadowing_db=6.0, base_loss=0.15))
    pipe = BandPipeline(site, keys, node="t")
    det = pipe.detector
    assert isinstance(det, WindowDetector)
    i = pipe.tracker.index[1001]
    row = np.array([i], dtype=np.int64)
    # The statistic itself (not decide mode's bounds below the threshold), with and without the change.
    on = replace(det.s, exact_lr=True)
    off = replace(on, shortest_always=False)
    longest, shortest = max(det.windows), min(det.windows)
    seen: list[tuple[float, float, float, float]] = []
    for s in range(1, int(cross) + 26):
        now = sim.start_ts + s
        for o in sim.advance(now):
            pipe.observe_raw(o)
        pipe.tick(now)
        if s < cross + 3:
            continue
        listen = np.array(det.tracker.rx_last) > now - 5.0
        held_long = float(run_test(det.cand, det._inputs(row, now, longest, listen, blocks=False)).lr[0])
        held_short = float(run_test(det.cand, det._inputs(row, now, shortest, listen, blocks=False)).lr[0])
        det.s = off
        lr_off = det.tick(now, row, row[:0], {})[i].lr
        det.s = on
        lr_on = det.tick(now, row, row[:0], {})[i].lr
        assert lr_on >= lr_off - 1e-9
        seen.append((held_long, held_short, lr_off, lr_on))
    # The case the change is for happens in this escape: the longest window says inside (at most
    # `shorter_below`) while the dwell-long one is well outside, and only the new schedule sees it.
    gated = [(a, b, c, d) for a, b, c, d in seen if a <= on.shorter_below and b > 5.0]
    assert gated, seen
    assert all(d >= b - 1e-6 and d > c + 5.0 for _a, b, c, d in gated), gated
