"""What the window test learns from the bands' own windows: the path-loss exponent and each receiver's
plateau loss (`window_exponent`, `window_loss`), with their guards."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.bands.hearing import DV, V0, Hearing
from edge.bands.window_exponent import ExponentLearner, ExponentParams
from edge.bands.window_loss import LossLearner
from edge.bands.window_test import Candidates, WindowParams, run_test
from tests.bands.test_window_test import _inputs, _site


def test_exponent_learned_from_inside_windows_moves_to_the_truth_from_a_low_start() -> None:
    site = _site()
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), WindowParams())
    rng = np.random.default_rng(7)
    learner = ExponentLearner(ExponentParams(learn=True))
    beacon_n, h = 2.4, learner.p.step
    for t in range(12):
        pts = [(float(rng.uniform(2, 18)), float(rng.uniform(2, 12))) for _ in range(8)]
        x = replace(_inputs(site, cand, pts, rng, window=30, n_true=3.0), exponent=learner.value(beacon_n))
        ll = [run_test(cand, replace(x, exponent=x.exponent + d), inside_only=True).ll_in for d in (-h, 0.0, h)]
        assert learner.add(10.0 * t, x.exponent, *ll) > 0
    assert abs(learner.value(beacon_n) - 3.0) < 0.15, learner.value(beacon_n)
    assert learner.sd() < 0.1


def test_exponent_learner_guards() -> None:
    learner = ExponentLearner(ExponentParams(learn=True, max_shift=0.5))
    assert learner.value(2.5) == 2.5  # nothing learned yet: the beacons' estimate
    flat = np.zeros(3)
    assert learner.add(0.0, 2.5, flat, flat, flat) == 0  # no curvature: no information
    convex = np.array([1.0])
    assert learner.add(0.0, 2.5, convex, np.zeros(1), convex) == 0
    # Windows that all point far above: the estimate is held within max_shift of the beacons'.
    h = learner.p.step
    for t in range(50):
        n = learner.value(2.5)
        lo, mid, hi = (np.array([-40.0 * (n + d - 5.0) ** 2]) for d in (-h, 0.0, h))
        learner.add(float(t), n, lo, mid, hi)
    assert learner.value(2.5) == 3.0
    off = ExponentLearner(ExponentParams(learn=False))
    assert off.add(0.0, 2.5, np.array([-1.0]), np.zeros(1), np.array([-1.0])) == 0
    assert off.value(2.4) == 2.4


def test_plateau_loss_learned_only_from_links_far_above_the_floor() -> None:
    learner = LossLearner(3, 0.15, 12.0)
    floor = np.full(3, -95.0)
    listen = np.array([True, True, False])
    k = np.array([[12.0, 20.0, 5.0], [24.0, 2.0, 30.0]])
    xbar = np.array([[-70.0, -88.0, -60.0], [-72.0, -90.0, -65.0]])  # rx 1: near its floor, misses explained
    for t in range(20):
        learner.add(20.0 * t, k, xbar, np.array([40.0, 40.0]), floor, listen)
    loss = learner.value()
    assert 0.45 < loss[0] <= 0.55  # 55 % lost far above the floor (the prior at 15 % still weighs a little)
    assert abs(loss[1] - 0.15) < 1e-9 and abs(loss[2] - 0.15) < 1e-9  # no usable link / not listening: the prior


def test_a_receiver_that_loses_more_adverts_far_above_its_floor_gets_its_own_miss_table() -> None:
    hearing = Hearing(["a", "b"], 3.0, default_floor_dbm=-95.0)
    strong = round((-50.0 - V0) / DV)  # far above the floor
    assert np.allclose(hearing.logmiss[:, strong], np.log(0.15), atol=0.01)
    hearing.set_loss(np.array([0.15, 0.4]))
    assert np.isclose(hearing.logmiss[0, strong], np.log(0.16), atol=0.01)  # 0.02 steps
    assert np.isclose(hearing.logmiss[1, strong], np.log(0.4), atol=0.01)
    weak = round((-120.0 - V0) / DV)
    assert np.allclose(hearing.logmiss[:, weak], 0.0, atol=1e-6)  # below the floor nothing is heard either way
