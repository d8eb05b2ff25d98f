"""The window test with the slow shadowing cut into blocks (issue 16: correlation modelled): the kernel
against its numpy oracle, one block equal to the held test, blocks giving more evidence when the slow
part decorrelates, the per-block bins, and the beacons' correlation-time estimate (`shadow_clock`)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from edge.bands.advert_bins import AdvertBins
from edge.bands.shadow_clock import ClockParams, ShadowClock, window_looks
from edge.bands.window_test import Candidates, LinkInputs, WindowParams, run_reference, run_test
from tests.bands.test_window_test import _inputs, _site


def _blocked(x: LinkInputs, rng: np.random.Generator, n_blk: int, held: float, blk: float) -> LinkInputs:
    """The same heard counts spread over n_blk blocks, each with its own mean level (a slow part that changed)."""
    kb = np.stack([np.floor(x.k / n_blk)] * n_blk, axis=2)
    kb[:, :, -1] += x.k - kb.sum(axis=2)
    xb = np.where(kb > 0, x.xbar[:, :, None] + rng.normal(0, blk, kb.shape), 0.0)
    nsb = np.repeat((x.n_sent / n_blk)[:, None], n_blk, axis=1)
    return replace(x, slow_sd=np.full(x.k.shape, held), kb=kb, xb=xb, nsb=nsb, blk_sd=np.full(x.k.shape, blk))


def test_block_kernel_matches_the_numpy_oracle() -> None:
    site = _site()
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), WindowParams())
    rng = np.random.default_rng(11)
    x = _blocked(_inputs(site, cand, [(10.0, 7.0), (19.0, 1.0), (10.0, -18.0), (40.0, 10.0)], rng, window=30),
                 rng, 3, 1.5, 3.0)
    fast, ref = run_test(cand, x), run_reference(cand, x)
    # Where no outside point can explain the strongest level the kernel skips them all and says -1000.
    sure = ref.lr < -300
    assert (fast.lr[sure] <= -300).all()
    assert np.allclose(fast.lr[~sure], ref.lr[~sure], rtol=0.01, atol=0.6), (fast.lr, ref.lr)
    assert np.allclose(fast.ll_in, ref.ll_in, rtol=0.01, atol=0.3), (fast.ll_in, ref.ll_in)


def test_one_block_is_the_held_test_and_blocks_add_evidence() -> None:
    site = _site()
    cand = Candidates(site, np.array([r.position for r in site.receivers], dtype=float), WindowParams())
    rng = np.random.default_rng(5)
    x = _inputs(site, cand, [(10.0, -18.0), (40.0, 10.0)], rng, window=30)
    held = run_test(cand, x).lr
    # blk_sd 0: the same numbers whatever the blocks hold.
    zero = _blocked(x, rng, 3, 3.5, 0.0)
    assert np.allclose(run_test(cand, zero).lr, held, atol=1e-9)
    # The same total slow variance (3.5²), most of it drawn per block and the block means equal to the
    # window's: three looks instead of one, so a clearly-outside band's statistic grows.
    same = replace(_blocked(x, rng, 3, 1.0, math.sqrt(3.5**2 - 1.0)), xb=np.repeat(x.xbar[:, :, None], 3, axis=2))
    assert (run_test(cand, same).lr > held + 5.0).all(), (run_test(cand, same).lr, held)


def test_window_blocks_split_the_window_counts() -> None:
    bins = AdvertBins(2, 3, span_s=64)
    rng = np.random.default_rng(2)
    for s in range(100, 140):
        for b in range(2):
            for r in range(3):
                if rng.random() < 0.7:
                    bins.add(b, r, s + 0.3, -80.0 - r - 0.1 * s)
    rows = np.array([0, 1])
    k, xbar, sent = bins.window(rows, 139.0, 30.0)
    kb, xb, nsb = bins.window_blocks(rows, 139.0, 30.0, 3)
    assert np.allclose(kb.sum(axis=2), k)
    assert np.allclose((kb * xb).sum(axis=2) / np.maximum(kb.sum(axis=2), 1), xbar)
    assert np.allclose(nsb.sum(axis=1), sent)
    assert (xb[:, :, 0] > xb[:, :, 2]).all()  # oldest block first (levels fall with time here)


def _clock_run(tau: float, var_v: float, seconds: int = 1200, seed: int = 0) -> ShadowClock:
    """Beacon links at -70 dBm with an AR(1) slow part (τ, σ_v²) and 3 dB per-packet noise, 1 advert/s."""
    rng = np.random.default_rng(seed)
    n_b, n_r = 2, 4
    bins = AdvertBins(n_b, n_r, span_s=64)
    clock = ShadowClock(np.arange(n_b, dtype=np.int64), ClockParams(min_pairs=500))
    rho = math.exp(-1.0 / tau) if math.isfinite(tau) else 1.0
    slow = rng.normal(0, math.sqrt(var_v), (n_b, n_r))
    for s in range(1, seconds):
        slow = rho * slow + math.sqrt(max(1 - rho * rho, 0.0) * var_v) * rng.normal(0, 1, slow.shape)
        for b in range(n_b):
            for r in range(n_r):
                bins.add(b, r, s + 0.5, -70.0 + slow[b, r] + rng.normal(0, 3.0))
        if s % 10 == 0:
            clock.add(bins, s + 1.0, np.full(n_r, -98.0))
    return clock


def test_shadow_clock_finds_the_correlation_time_and_a_place_bound_shadow() -> None:
    c = _clock_run(8.0, 18.0)
    assert 4.0 <= c.tau <= 16.0 and 10.0 <= c.var_v <= 30.0, (c.tau, c.var_v)
    assert c.blocks(40.0) >= 2 and c.blocks(10.0) <= 2
    fixed = _clock_run(math.inf, 18.0, seed=1)  # the shadow does not change with time: hold it all
    assert fixed.blocks(40.0) == 1 and fixed.var_v == 0.0, (fixed.tau, fixed.var_v)
    assert window_looks(40.0, 8.0) > 2.5 and window_looks(40.0, math.inf) == 1.0
