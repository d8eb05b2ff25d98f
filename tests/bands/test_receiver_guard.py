"""The raise-time receiver guard (issue 16, one bad receiver): a breach that rests on one receiver's gain is
not raised; one carried by several receivers is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from edge.bands.hearing import HearingParams, miss_table
from edge.bands.receiver_guard import GuardParams, gain_free_lr, guard
from edge.bands.window_test import Candidates, LinkInputs, WindowParams, run_test
from tests.bands.test_window_test import _inputs, _site

THRESHOLD = 13.0
ON = GuardParams(on=True, free_db=6.0, exempt_judged_ok=False)


def _reads_low(x: LinkInputs, rx: int, db: float) -> LinkInputs:
    """The same window with receiver `rx` reading `db` low, its gain not learned: its levels and its measured
    floor (in the corrected frame) both sit `db` lower."""
    xbar = x.xbar.copy()
    xbar[:, rx] = np.where(x.k[:, rx] > 0, xbar[:, rx] - db, 0.0)
    floor = x.floor.copy()
    floor[rx] -= db
    logmiss = x.logmiss.copy()
    logmiss[rx] = miss_table(float(floor[rx]), x.fast_sd, HearingParams())
    return replace(x, xbar=xbar, floor=floor, logmiss=logmiss)


def test_a_breach_resting_on_one_low_receiver_is_held_and_escapees_are_not() -> None:
    site = _site()
    rx = np.array([r.position for r in site.receivers], dtype=float)
    cand = Candidates(site, rx, WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0))
    # A band standing 1 m inside the west fence (no receiver beyond it), the inside receiver reading very low
    # (this small site needs a large error to push a band out: its inside receiver sits mid-zone).
    pts = [(10.0, 13.0), (10.0, 1.0), (19.0, 7.0), (1.0, 7.0)]
    low = _reads_low(_inputs(site, cand, pts, np.random.default_rng(3), window=40), 0, 18.0).take(np.array([3]))
    # Escapees standing 18-22 m beyond the south and north fences, every receiver sound.
    esc = _inputs(site, cand, [(10.0, -18.0), (10.0, 32.0)], np.random.default_rng(0), window=30)
    every = np.ones(len(rx), dtype=bool)

    def inputs_of(x: LinkInputs) -> Callable[[NDArray[np.int64], float], LinkInputs]:
        return lambda rows, _w: x.take(rows)

    raw_low = run_test(cand, low).lr
    assert raw_low[0] >= THRESHOLD, raw_low  # without the guard: a false breach
    rows = np.arange(1, dtype=np.int64)
    held = guard(cand, inputs_of(low), rows, raw_low, np.array([40.0]), THRESHOLD, every, ON)
    assert held[0] < THRESHOLD, held

    raw_esc = run_test(cand, esc).lr
    rows2 = np.arange(2, dtype=np.int64)
    kept = guard(cand, inputs_of(esc), rows2, raw_esc, np.full(2, 30.0), THRESHOLD, every, ON)
    assert (raw_esc >= THRESHOLD).all() and (kept >= THRESHOLD).all(), (raw_esc, kept)
    assert (kept <= raw_esc).all()  # the guard only ever lowers a statistic

    # Off, or no receiver under suspicion: the statistic is untouched.
    assert guard(cand, inputs_of(low), rows, raw_low, np.array([40.0]), THRESHOLD, every,
                 GuardParams(on=False))[0] == raw_low[0]
    assert guard(cand, inputs_of(low), rows, raw_low, np.array([40.0]), THRESHOLD, ~every,
                 ON)[0] == raw_low[0]


def test_heard_only_frees_just_the_receivers_that_heard_the_band() -> None:
    """`heard_only`: the low receiver heard the band, so its pull is still held; an escapee's statistic is never
    lower than with every receiver freed (the silent inside receiver keeps its evidence)."""
    site = _site()
    rx = np.array([r.position for r in site.receivers], dtype=float)
    cand = Candidates(site, rx, WindowParams(outside_spacing_m=6.0, outside_pad_m=40.0))
    pts = [(10.0, 13.0), (10.0, 1.0), (19.0, 7.0), (1.0, 7.0)]
    low = _reads_low(_inputs(site, cand, pts, np.random.default_rng(3), window=40), 0, 18.0).take(np.array([3]))
    esc = _inputs(site, cand, [(10.0, -18.0), (10.0, 32.0)], np.random.default_rng(0), window=30)
    every = np.arange(len(rx), dtype=np.int64)
    assert low.k[0, 0] > 0
    assert gain_free_lr(cand, low, 6.0, every, heard_only=True)[0] < THRESHOLD
    assert (gain_free_lr(cand, esc, 6.0, every, heard_only=True) >= gain_free_lr(cand, esc, 6.0, every) - 1e-9).all()
