"""Cost of the band-gain learner's looks on a 500-band site, by search-cell setting (issues 14 and 16).

Each look (`WindowDetector._learn_gains`) runs the window test for a band at every gain of `GRID_DB` with
its position free. This runs bench/bands_speed.py's 500-band site through the real pipeline, keeps every
learner call of the timed ticks (its candidates and inputs), and times the same calls again with the
position-free set searched in cells of each size given. The results must be the same bit for bit (the
cells only order and prune the search); the first setting is the baseline of the ratio.

Usage: .venv/bin/python -m bench.bands_gain_cost [--seconds 130] [--cells 12x1,16x4,8x4]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import edge.bands.window_detector as detector_module
from bench.bands_speed import big_site
from edge.bands.pipeline import BandPipeline
from edge.bands.window_test import FREE_CELL_M, FREE_CELL_RATIO, Candidates, LinkInputs, run_test
from edge.sim import Simulator
from edge.sim.keys import demo_keys

CLOCK = time.thread_time  # CPU time of this thread: the 2 cores are shared


def learner_calls(seconds: int) -> tuple[list[tuple[Candidates, LinkInputs]], int, float, float]:
    """The learner's calls of the run, its number of ticks, and the CPU seconds of the learner's and the other
    window-test calls."""
    site = big_site()
    keys = demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons])
    sim = Simulator(site, keys, seed=1, start_ts=1_700_000_000.0)
    obs = sim.advance(sim.start_ts + seconds)
    pipe = BandPipeline(site, keys, node="bench")
    det = pipe.detector
    assert det is not None
    calls: list[tuple[Candidates, LinkInputs]] = []
    cost = {"learner": 0.0, "other": 0.0}

    def timed(c: Candidates, x: LinkInputs, inside_only: bool = False, decide: tuple[float, ...] = ()) -> Any:
        t = CLOCK()
        out = run_test(c, x, inside_only, decide)
        learner = c is det._free
        cost["learner" if learner else "other"] += CLOCK() - t
        if learner:
            calls.append((c, x))
        return out

    setattr(detector_module, "run_test", timed)  # noqa: B010  (the detector's own calls are the ones timed)
    try:
        i = 0
        for s in range(1, seconds + 1):
            now = sim.start_ts + s
            while i < len(obs) and obs[i].ts < now:
                o = obs[i]
                pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
                i += 1
            pipe.tick(now)
    finally:
        setattr(detector_module, "run_test", run_test)  # noqa: B010
    return calls, seconds, cost["learner"], cost["other"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=130, help="simulated seconds (the learner starts at 60 s)")
    ap.add_argument("--cells", default=f"12x1,{FREE_CELL_M:g}x{FREE_CELL_RATIO},8x4",
                    help="fine cell side (m) x fine cells a coarse cell's side; the first is the baseline")
    a = ap.parse_args()
    con = Console(width=140)
    settings = [(float(c.split("x")[0]), int(c.split("x")[1])) for c in a.cells.split(",")]
    calls, ticks, learner_s, other_s = learner_calls(a.seconds)
    rows = sum(len(x.sets) for _, x in calls)
    con.print(f"machine: {platform.machine()} {os.cpu_count()} cpu; {ticks} ticks, {len(calls)} learner calls "
              f"({rows} rows); in the run: learner {learner_s:.2f} CPU s, the rest of the window test "
              f"{other_s:.2f} CPU s (cells {FREE_CELL_M:g} m x {FREE_CELL_RATIO})")
    per: dict[tuple[float, int], float] = {s: 0.0 for s in settings}
    for c0, x in calls:
        ref = run_test(c0, x, inside_only=True)
        for rep in range(2):  # each setting twice, in alternating order
            for s in settings if rep == 0 else settings[::-1]:
                c = copy.copy(c0)
                c.set_cells(*s)
                t = CLOCK()
                r = run_test(c, x, inside_only=True)
                per[s] += CLOCK() - t
                for f in ("ll_in", "in_xy"):
                    if not np.array_equal(getattr(r, f), getattr(ref, f), equal_nan=True):
                        raise SystemExit(f"cells {s}: {f} differs from the product's: the search is not exact")
    tab = Table(title="the learner's calls timed again per cell setting: CPU ms per call (mean of 2)")
    for col in ("cells", "fine / coarse cells", "ms per call", "ms per row", "ratio to the first"):
        tab.add_column(col)
    base = per[settings[0]]
    for s in settings:
        c = copy.copy(calls[0][0])
        c.set_cells(*s)
        tab.add_row(f"{s[0]:g} m x {s[1]}", f"{len(c.cptr) - 1} / {len(c.kptr) - 1}",
                    f"{per[s] / 2 / len(calls) * 1e3:.1f}", f"{per[s] / 2 / rows * 1e3:.2f}", f"{base / per[s]:.2f}x")
    con.print(tab)


if __name__ == "__main__":
    main()
