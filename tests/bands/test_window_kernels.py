"""The window test's kernel searches candidates by branch and bound over cells, and memoises the
tables of receivers that heard nothing: both must give the exhaustive search's results bit for bit."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest

from edge.bands.window_test import Candidates, LinkInputs, WindowParams, WindowResult, run_test
from tests.bands.test_window_test import _inputs, _site

FIELDS = ("lr", "out_xy", "out_m", "in_xy", "b_mean", "b_var", "ll_in")


def _same(a: WindowResult, b: WindowResult) -> None:
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), (f, getattr(a, f), getattr(b, f))


def _cases(site: object, cand: Candidates, seed: int) -> LinkInputs:
    """Bands inside, at the fence and outside; one deaf receiver, one not listening; windows of two lengths."""
    rng = np.random.default_rng(seed)
    pts = [(float(x), float(y)) for x, y in rng.uniform([-30, -30], [50, 45], size=(40, 2))]
    pts += [(10.0, 7.0), (0.0, 0.0), (20.0, 14.0), (10.0, -15.0), (35.0, 7.0)]
    x = _inputs(site, cand, pts, rng, deaf=int(rng.integers(0, 4)))  # type: ignore[arg-type]
    m = len(pts)
    n_sent = np.where(rng.random(m) < 0.3, 10.0, 20.0)  # two lengths in one call: the memo's key changes
    k = np.minimum(x.k, n_sent[:, None])
    listen = x.listen.copy()
    listen[int(rng.integers(0, 4))] = seed % 2 == 0
    return LinkInputs(k=k, xbar=np.where(k > 0, x.xbar, 0.0), n_sent=n_sent, power=x.power + rng.normal(0, 2, m),
                      sb=np.full(m, 2.0), slow_sd=x.slow_sd, fast_sd=x.fast_sd, listen=listen, floor=x.floor,
                      logmiss=x.logmiss, exponent=x.exponent, sets=x.sets)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_pruned_search_and_memo_equal_the_exhaustive_search_bit_for_bit(seed: int) -> None:
    site = _site()
    rx = np.array([r.position for r in site.receivers], dtype=float)
    cand = Candidates(site, rx, WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0))
    every = copy.deepcopy(cand)
    every.set_cells(1e9)  # one cell per inside / outside group: nothing can be pruned, every candidate is scored
    x = _cases(site, cand, seed)
    ref = run_test(every, x)
    assert np.isfinite(ref.lr).sum() >= 30
    _same(run_test(cand, x), ref)
    for fine_m, ratio in ((2.0, 1), (5.0, 3), (30.0, 1), (16.0, 4)):  # other cell sizes: the same numbers
        other = copy.deepcopy(cand)
        other.set_cells(fine_m, ratio)
        _same(run_test(other, x), ref)
    # Row by row (a fresh memo per call) and in reverse order: the same numbers again.
    one = [run_test(cand, x.take(np.array([i]))) for i in range(len(x.sets))]
    for f in FIELDS:
        assert np.array_equal(np.concatenate([getattr(r, f) for r in one]), getattr(ref, f), equal_nan=True), f
    rev = np.arange(len(x.sets))[::-1].copy()
    back = run_test(cand, x.take(rev))
    for f in FIELDS:
        assert np.array_equal(getattr(back, f)[::-1], getattr(ref, f), equal_nan=True), f
    inner, inner_ref = run_test(cand, x, inside_only=True), run_test(every, x, inside_only=True)
    _same(inner, inner_ref)
    # The band-gain learner's position-free set, with its own (larger) cells.
    free = cand.position_free()
    free_every = copy.deepcopy(free)
    free_every.set_cells(1e9)
    anywhere = replace(x, sets=np.zeros(len(x.sets), dtype=np.int64))
    _same(run_test(free, anywhere, inside_only=True), run_test(free_every, anywhere, inside_only=True))
    # The exponent profiled over three values (each hypothesis keeps its best over exponents and rows).
    prof = replace(x, exponent_up=(0.0, 0.2, 0.4), profile_above=-2.0 if seed % 2 else -math.inf)
    _same(run_test(cand, prof), run_test(every, prof))


@pytest.mark.parametrize("seed", [1, 2])
def test_decided_statistic_is_on_the_exact_side_of_every_threshold(seed: int) -> None:
    """`decide`: below the last threshold lr may be a bound, but every comparison with a threshold (<, <=, >, >=)
    comes out as with the exact statistic; at or above it, and inside, everything is the exact result."""
    site = _site()
    rx = np.array([r.position for r in site.receivers], dtype=float)
    cand = Candidates(site, rx, WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0))
    x = _cases(site, cand, seed)
    ref = run_test(cand, x)
    finite = np.sort(ref.lr[np.isfinite(ref.lr)])
    # The detector's kind of thresholds, and thresholds placed exactly on some rows' statistic (ties).
    for decide in ((-6.0, -2.0, 3.25, 6.5, 13.0), tuple(float(v) for v in finite[::5]), (float(np.median(finite)),)):
        got = run_test(cand, x, decide=decide)
        for f in ("in_xy", "b_mean", "b_var", "ll_in"):
            assert np.array_equal(getattr(got, f), getattr(ref, f), equal_nan=True), f
        above = ref.lr >= decide[-1]
        for f in ("lr", "out_xy", "out_m"):
            assert np.array_equal(getattr(got, f)[above], getattr(ref, f)[above], equal_nan=True), f
        assert np.array_equal(np.isnan(got.lr), np.isnan(ref.lr))
        ok = np.isfinite(ref.lr)
        for t in decide:
            for cmp in (np.less, np.less_equal, np.greater, np.greater_equal):
                assert np.array_equal(cmp(got.lr[ok], t), cmp(ref.lr[ok], t)), (t, cmp)
    settled = run_test(cand, x, decide=(-6.0, -2.0, 3.25, 6.5, 13.0))
    assert (settled.lr != ref.lr).sum() >= 3  # the shortcut is taken (else this test would prove nothing)
