"""Each long window's own null tail, and what a threshold offset per window trades (issue 16, false-alarm side).

The detector compares the largest of its long windows' statistics (breach_dwell_s + 0, 10, 20 s) with one
threshold: a multiple test whose shortest window has the widest null tail. This runs
`bench.bands_breach`'s scenarios through the real pipeline (its null runs: walkers and fence-standers,
`--null-runs` runs from `--seed` + 50,000, layout k mod 4, σ (k div 4) mod 3 of `--null-sigma`, as
bands_breach numbers them; its `--quick` recall runs: demo + compound, σ 6, 48 bands, 16 escapees) with the
statistic computed exactly (`DetectorParams.exact_lr`) and records, per tested band and tick, each window's
statistic as the detector computed it (blocks included). It prints

* per window, the upward crossings of T by bands that never left (null runs), per 100 band-hours, at
  T 9…17 (+3 in the first 90 s, as the rule): each window's null tail;
* per offset of the dwell-long window (`WindowParams.threshold_extra` = (o, 0, 0)), the crossings of the
  threshold by max(S_dwell - o, S_+10, S_+20) and the escapees whose statistic crossed it within
  breach_dwell_s + 30 s.

The schedule (which bands are tested when) is the one of offset 0, so the offset rows are an estimate:
bench.bands_breach with the offset set measures the alerts. Crossings are not alerts (the rule raises once
per episode), so compare rows with each other.

Usage: .venv/bin/python -m bench.bands_window_offsets [--radios default,alt] [--null-runs 12]
       [--null-bands 168] [--null-duration 900] [--null-sigma 4,6,8] [--seed 16000] [--offsets 0,1,2,3,4]
       [--jobs 1] [--save FILE]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.bands_breach import START, Channel, build_scenario, radio_params
from edge.bands.pipeline import BandPipeline
from edge.bands.window_detector import WindowDetector
from edge.bands.window_test import WindowResult
from edge.sim import Simulator
from edge.sim.escapes import KINDS
from edge.sim.keys import site_demo_keys
from edge.sim.sites import BREACH_LAYOUTS, DEFAULT_BREACH_LAYOUTS, layout_site

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
LEVELS = (9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0)
STARTUP_S, STARTUP_EXTRA, THRESHOLD = 90.0, 3.0, 13.0


@dataclass
class Run:
    """One run's per-window statistics of the tested bands: {window: (B, seconds) array, NaN = not tested}."""

    layout: str
    radio: str
    sigma: float
    seed: int
    kind: str  # null / recall
    n_bands: int
    duration: float
    stats: dict[float, np.ndarray] = field(default_factory=dict)  # keyed by extra_s (the dwell differs by layout)
    escape: dict[int, tuple[float, float]] = field(default_factory=dict)  # band row -> (cross_at s, deadline s)
    cpu_s: float = 0.0


def one(job: tuple[str, str, float, int, str, int, float]) -> Run:
    """Simulate one run and record each window's statistic for every tested band and second."""
    layout, radio, sigma, seed, kind, n_bands, dur = job
    t0 = time.process_time()
    n_esc = 16 if kind == "recall" else 0
    site = layout_site(layout, n_bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    sc, escapes = build_scenario(site, seed, n_esc, list(KINDS), dur, site.rules.breach_dwell_s)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc,
                    radio=radio_params(site, Channel(radio, sigma, 0.15, 2.0)))
    pipe = BandPipeline(site, keys, node="bench")
    det = pipe.detector
    assert isinstance(det, WindowDetector)  # the window test is the default
    det.s = replace(det.s, exact_lr=True)  # read at every level: the statistic itself
    n_s = int(dur)
    run = Run(layout, radio, sigma, seed, kind, len(site.bands), dur,
              {e: np.full((len(site.bands), n_s), np.nan) for e in det.p.extra_s})
    extra = dict(zip(det.windows, det.p.extra_s, strict=True))
    sec = [0]
    inner = det._with_blocks

    def record(rows: I64, now: float, window_s: float, listen: NDArray[np.bool_], held: WindowResult,
               decide: tuple[float, ...]) -> tuple[F64, F64, F64]:
        lr, xy, om = inner(rows, now, window_s, listen, held, decide)
        run.stats[extra[window_s]][rows, sec[0]] = lr + det._offset[window_s]  # the window's own statistic
        return lr, xy, om

    det._with_blocks = record  # type: ignore[method-assign]
    dwell = site.rules.breach_dwell_s + 30.0
    run.escape = {pipe.tracker.index[e.band]: (e.cross_at, e.cross_at + dwell) for e in escapes}
    for s in range(1, n_s + 1):
        sec[0] = s - 1
        now = START + s
        for o in sim.advance(now):
            pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
        pipe.tick(now)
    run.cpu_s = time.process_time() - t0
    return run


def crossings(stat: np.ndarray, level: float, escape: dict[int, tuple[float, float]]) -> tuple[int, set[int]]:
    """Upward crossings of `level` (+3 in the first 90 s) by bands before their escape (never-left bands: all
    their seconds), and the escapees that crossed it within their deadline. NaN (not tested) keeps the state."""
    n_b, n_s = stat.shape
    lev = np.full(n_s, level)
    lev[: int(STARTUP_S)] += STARTUP_EXTRA
    on = np.zeros(n_b, dtype=bool)
    count, caught = 0, set()
    for s in range(n_s):
        col = stat[:, s]
        tested = ~np.isnan(col)
        now_on = np.where(tested, np.nan_to_num(col, nan=-1e9) >= lev[s], on)
        for i in np.nonzero(now_on & ~on)[0].tolist():
            e = escape.get(i)
            if e is None or s + 1 < e[0]:
                count += 1
            elif s + 1 <= e[1]:
                caught.add(i)
        on = now_on
    return count, caught


def combined(run: Run, offset: float) -> np.ndarray:
    """max over the windows of S_w less the dwell-long window's offset (NaN where none was tested)."""
    ws = sorted(run.stats)
    arr = np.stack([run.stats[w] - (offset if w == ws[0] else 0.0) for w in ws])
    out = np.full(arr.shape[1:], -np.inf)
    for a in arr:
        out = np.where(np.isnan(a), out, np.maximum(out, a))
    return np.where(np.isinf(out), np.nan, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--null-runs", type=int, default=12)
    ap.add_argument("--null-bands", type=int, default=168)
    ap.add_argument("--null-duration", type=float, default=900.0)
    ap.add_argument("--null-sigma", default="4,6,8")
    ap.add_argument("--recall", default="demo,compound", help="layouts of the σ 6 recall runs ('' = none)")
    ap.add_argument("--offsets", default="0,1,2,3,4")
    ap.add_argument("--seed", type=int, default=16_000)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--save", type=Path, help="pickle the runs' statistics here")
    a = ap.parse_args(argv)
    radios = [r for r in a.radios.split(",") if r]
    sigmas = [float(x) for x in a.null_sigma.split(",") if x]
    recall = [x for x in a.recall.split(",") if x]
    offsets = [float(x) for x in a.offsets.split(",") if x]
    layouts = list(DEFAULT_BREACH_LAYOUTS)
    if any(r not in ("alt", "default") for r in radios) or any(x not in BREACH_LAYOUTS for x in recall) or a.jobs < 1:
        print("bands_window_offsets: unknown radio, layout or jobs", file=sys.stderr)
        return 2
    jobs = [(lay, radio, 6.0, a.seed + 6, "recall", 48, 660.0) for radio in radios for lay in recall]
    jobs += [(layouts[k % len(layouts)], radio, sigmas[(k // len(layouts)) % len(sigmas)], a.seed + 50_000 + k, "null",
              a.null_bands, a.null_duration) for radio in radios for k in range(a.null_runs)]
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {len(jobs)} runs, jobs {a.jobs}")
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as ex:
        runs = list(ex.map(one, jobs, chunksize=1))
    print(f"{time.time() - t0:.0f} s wall, {sum(r.cpu_s for r in runs):.0f} s CPU, load {os.getloadavg()[0]:.1f}")
    if a.save is not None:
        with a.save.open("wb") as fh:
            pickle.dump(runs, fh)
    for radio in radios:
        null = [r for r in runs if r.radio == radio and r.kind == "null"]
        rec = [r for r in runs if r.radio == radio and r.kind == "recall"]
        bh = sum(r.n_bands * r.duration for r in null) / 3600.0
        print(f"\n**{radio} radio: each window's null tail** (upward crossings per 100 band-h in {bh:.0f} band-h "
              f"of null runs; +3 in the first 90 s)\n")
        ws = sorted(null[0].stats) if null else []
        print("| window | " + " | ".join(f"T {t:g}" for t in LEVELS) + " | largest |")
        print("|---|" + "---|" * (len(LEVELS) + 1))
        for w in ws:
            cells = []
            for t in LEVELS:
                n = sum(crossings(r.stats[w], t, {})[0] for r in null)
                cells.append(f"{100 * n / bh:.2f} ({n})")
            top = max(float(np.nanmax(r.stats[w][:, int(STARTUP_S):], initial=-np.inf)) for r in null)
            print(f"| dwell + {w:g} s | " + " | ".join(cells) + f" | {top:.1f} |")
        print(f"\n**{radio} radio: offset on the dwell-long window** (threshold {THRESHOLD:g}; null crossings in "
              f"{bh:.0f} band-h; recall within dwell + 30 s, {'/'.join(recall)}, σ 6, 16 each)\n")
        print("| dwell offset | null crossings | per 100 bh | of them beyond the +10/+20 s windows' own | recall |")
        print("|---|---|---|---|---|")
        for o in offsets:
            n = sum(crossings(combined(r, o), THRESHOLD, {})[0] for r in null)
            alone = 0
            for r in null:
                rest = combined(replace(r, stats={w: v for w, v in r.stats.items() if w != ws[0]}), 0.0)
                c_all, _ = crossings(combined(r, o), THRESHOLD, {})
                c_rest, _ = crossings(rest, THRESHOLD, {})
                alone += c_all - c_rest
            caught = "/".join(str(len(crossings(combined(r, o), THRESHOLD, r.escape)[1])) for r in rec)
            print(f"| {o:g} | {n} | {100 * n / bh:.2f} | {alone} | {caught} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
