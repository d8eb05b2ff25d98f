"""Each receiver's loss burstiness (`miss_bursts`): measured where the level explains no miss, 1 for
independent losses, and the window test weighs a bursty receiver's misses less."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.bands.miss_bursts import BurstLearner, BurstParams
from edge.bands.window_test import Candidates, WindowParams, run_test
from tests.bands.test_window_test import _inputs, _site

BLOCKS, PER_BLOCK = 7, 8  # the learner's default span: 7 blocks of 8 s at one advert a second


def _heard(rng: np.random.Generator, links: int, bursty: bool) -> np.ndarray:
    """(links, BLOCKS) adverts heard per block: 15 % lost, independently or in Gilbert-Elliott bursts
    (70 % lost in a bad state a fifth of the time, 3 s long on average: the alt radio's)."""
    n = BLOCKS * PER_BLOCK
    if not bursty:
        ok = rng.random((links, n)) >= 0.15
    else:
        bad = np.zeros((links, n), dtype=bool)
        state = rng.random(links) < 0.2
        leave, enter = 1.0 - np.exp(-1.0 / 3.0), 1.0 - np.exp(-0.2 / (3.0 * 0.8))
        for t in range(n):
            u = rng.random(links)
            state = np.where(state, u >= leave, u < enter)
            bad[:, t] = state
        ok = rng.random((links, n)) >= np.where(bad, 0.7, 0.05)
    return np.asarray(ok.reshape(links, BLOCKS, PER_BLOCK).sum(axis=2), dtype=float)


def _feed(learner: BurstLearner, rng: np.random.Generator, bursty: tuple[bool, ...], level: float,
          rounds: int = 40, links: int = 12) -> None:
    """`links` strong links per receiver (heard at `level`), one look per 20 s."""
    n_rx = len(bursty)
    for t in range(rounds):
        kb = np.stack([_heard(rng, links, b) for b in bursty], axis=1)  # (M, R, J)
        nsb = np.full((links, BLOCKS), float(PER_BLOCK))
        learner.add(20.0 * t, kb, np.full((links, n_rx), level), nsb, np.full(n_rx, -95.0), np.ones(n_rx, bool))


def test_independent_losses_read_one_and_bursts_read_their_dispersion() -> None:
    rng = np.random.default_rng(5)
    learner = BurstLearner(3, 12.0)
    _feed(learner, rng, (False, True, True), level=-70.0)
    d = learner.value()
    assert d[0] < 1.15  # binomial losses: each miss is worth one
    # A 3 s burst spans a block boundary often enough that the 8 s blocks read ≈ 2.3 of the ≈ 3 of a long window.
    assert 1.8 < d[1] < 3.0 and 1.8 < d[2] < 3.0


def test_only_strong_links_listening_receivers_and_whole_spans_count() -> None:
    rng = np.random.default_rng(6)
    weak = BurstLearner(2, 12.0)
    _feed(weak, rng, (True, True), level=-80.0)  # 15 dB above the floor: under 12 + the 6 dB margin
    assert np.allclose(weak.value(), 1.0) and weak.state()["miss_dispersion_measured"] == 0.0
    deaf = BurstLearner(2, 12.0)
    kb = np.stack([_heard(rng, 12, True), _heard(rng, 12, True)], axis=1)
    nsb = np.full((12, BLOCKS), float(PER_BLOCK))
    nsb[:, 0] = 0.0  # the bands were first heard inside the span: not a whole span of adverts to judge
    for t in range(40):
        deaf.add(20.0 * t, kb, np.full((12, 2), -70.0), nsb, np.full(2, -95.0), np.array([True, True]))
        deaf.add(20.0 * t, kb, np.full((12, 2), -70.0), np.full((12, BLOCKS), 8.0), np.full(2, -95.0),
                 np.array([False, False]))
    assert np.allclose(deaf.value(), 1.0)
    off = BurstLearner(1, 12.0, BurstParams(learn=False))
    _feed(off, rng, (True,), level=-70.0)
    assert np.allclose(off.value(), 1.0) and off.state()["miss_dispersion"] == 1.0


def test_start_up_takes_losses_as_bursty_until_two_looks_say_otherwise() -> None:
    """Unmeasured, a miss counts 1/`start_d`; two looks at a dozen strong links per receiver with independent
    losses brings it under 1.3, and a bursty site stays high."""
    rng = np.random.default_rng(8)
    calm, rough = BurstLearner(3, 12.0), BurstLearner(3, 12.0)
    assert np.allclose(calm.value(), BurstParams().start_d) and calm.state()["miss_dispersion_measured"] == 0.0
    _feed(calm, rng, (False, False, False), level=-70.0, rounds=2)
    _feed(rough, rng, (True, True, True), level=-70.0, rounds=2)
    assert calm.value().max() < 1.3 and calm.state()["miss_dispersion_measured"] > 0.8
    assert rough.value().min() > 1.6
    # A site whose links never qualify (few bands, all weak) is not held at the start-up value for ever.
    p = BurstParams()
    weak = BurstLearner(2, 12.0)
    _feed(weak, rng, (True, True), level=-80.0, rounds=1)
    assert np.allclose(weak.value(), p.start_d)
    weak.add(p.start_s / 2, np.zeros((0, 2, BLOCKS)), np.zeros((0, 2)), np.zeros((0, BLOCKS)), np.full(2, -95.0),
             np.ones(2, bool))
    assert np.allclose(weak.value(), 1.0 + (p.start_d - 1.0) / 2)
    _feed(weak, rng, (True, True), level=-80.0, rounds=int(p.start_s / 20) + 1)
    assert np.allclose(weak.value(), 1.0)


def test_a_receiver_without_strong_links_takes_the_sites_value() -> None:
    rng = np.random.default_rng(7)
    learner = BurstLearner(2, 12.0)
    for t in range(40):  # receiver 1 (outside: the residents are far from it) never has a strong link
        kb = np.stack([_heard(rng, 12, True), _heard(rng, 12, True)], axis=1)
        xbar = np.column_stack([np.full(12, -70.0), np.full(12, -90.0)])
        learner.add(20.0 * t, kb, xbar, np.full((12, BLOCKS), 8.0), np.full(2, -95.0), np.ones(2, bool))
    d = learner.value()
    assert d[0] > 1.8 and abs(d[1] - d[0]) < 0.15


def test_the_window_test_weighs_a_bursty_receivers_misses_less() -> None:
    """A band outside whose evidence is the inside receiver's silence: with that receiver's misses weighed
    by 1/D (its logmiss row scaled, as the detector does) the statistic falls, and with D = 1 it is unchanged."""
    site = _site()
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float),
                      WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0))
    rng = np.random.default_rng(3)
    x = _inputs(site, cand, [(10.0, -20.0)], rng, window=30)  # 20 m south of the fence
    k, xbar = x.k.copy(), x.xbar.copy()
    k[0, 0], xbar[0, 0] = 0.0, 0.0  # the inside receiver 27 m away heard none of its 30 adverts
    x = replace(x, k=k, xbar=xbar)
    base = run_test(cand, x).lr
    same = run_test(cand, replace(x, logmiss=x.logmiss * 1.0)).lr
    w = np.ones(len(site.receivers))
    w[0] = 1.0 / 2.5  # the inside receiver's misses in bursts
    weighed = run_test(cand, replace(x, logmiss=x.logmiss * w[:, None])).lr
    assert np.array_equal(base, same)
    assert base[0] > 13.0  # outside, on the inside receiver's silence
    assert weighed[0] < base[0] - 1.5
    assert weighed[0] > 13.0  # thirty misses in a row are still evidence when they may come in bursts
