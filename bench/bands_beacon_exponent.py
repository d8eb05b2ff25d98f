"""Does the censored beacon fit read the site's exponent right, and how soon? (issue 16)

Runs null runs (nobody escapes) of `bench.bands_breach`'s layouts and channels through the real
pipeline, with the censored beacon fit (`edge.bands.beacon_exponent`) turned on, and at fixed
times reads three exponents against the simulator's own:

* `linear`: the beacons' linear calibration (`calibration`, what the window test uses today);
* `censored`: the censored fit (heard and missed adverts through each receiver's hearing curve);
* the alt radio's "true" exponent is its power law's; its fading deepens with distance, so the
  dB-domain slope there is not exactly it (docs/bands.md, "Exponent from the bands").

Prints, per radio × σ and time: the mean and rms error of each against the truth, over layouts and
seeds, and the median and largest of the beacons' misfit (`BeaconExponent.misfit`: how far the fitted
distance law leaves the pairs; above `misfit_max` a band's narrow gain is not used). Few bands are
simulated: the beacons are what is measured.

Usage: .venv/bin/python -m bench.bands_beacon_exponent [--radios default,alt] [--sigmas 4,6,8]
       [--layouts demo,perimeter,compound,lwing] [--seeds 2] [--at 60,120,300,900] [--jobs 2] [--runs]
       QWATCH_BENCH_ROUND_SHARE=0.7 (a diagnostic): that share of the slow shadow taken as changing from round to
       round, instead of the shadow clock's reading (`BeaconFitParams.round_share`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np

from bench.bands_breach import START, Channel, build_scenario, feed_second, radio_params
from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.sites import DEFAULT_BREACH_LAYOUTS, layout_site


def one(args: tuple[str, str, float, int, int, tuple[int, ...]]) -> list[tuple[int, float, float, float, float]]:
    """(time, linear, censored, truth, the beacons' misfit) at each of `at` seconds of one null run."""
    layout, radio, sigma, seed, n_bands, at = args
    ch = Channel(radio, sigma, 0.15, 2.0)
    site = layout_site(layout, n_bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    sc, _ = build_scenario(site, seed, 0, ["stand"], float(max(at)), site.rules.breach_dwell_s)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc, radio=radio_params(site, ch))
    pipe = BandPipeline(site, keys, node="beacon-exponent")
    det = pipe.detector
    assert det is not None
    share = os.environ.get("QWATCH_BENCH_ROUND_SHARE")
    det.beacon_fit.p = replace(det.beacon_fit.p, learn=True, round_share=float(share) if share else None)
    truth = float(getattr(sim.channel, "exponent", sim.channel.p.path_loss_exponent))
    out = []
    for s in range(1, max(at) + 1):
        feed_second(sim, pipe, START + s)
        if s in at:
            out.append((s, float(pipe.tracker.calibration.exponent), float(det.beacon_fit.value(np.nan)), truth,
                        det.beacon_fit.misfit))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--sigmas", default="4,6,8")
    ap.add_argument("--layouts", default=",".join(DEFAULT_BREACH_LAYOUTS))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=16000)
    ap.add_argument("--bands", type=int, default=20)
    ap.add_argument("--at", default="60,120,300,900")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", action="store_true", help="also print every run's exponents at the last time")
    a = ap.parse_args(argv)
    at = tuple(int(x) for x in a.at.split(","))
    jobs = [(lay, radio, float(sg), a.seed + 50_000 + k, a.bands, at)
            for radio in a.radios.split(",") for sg in a.sigmas.split(",")
            for lay in a.layouts.split(",") for k in range(a.seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as ex:
        res = list(ex.map(one, jobs))
    print(f"# {len(jobs)} null runs ({a.bands} bands), seed {a.seed}; {time.time() - t0:.0f} s wall")
    if a.runs:
        print("| layout | radio | σ | seed | truth | linear | censored | misfit |")
        print("|---|---|---|---|---|---|---|---|")
        for j, r in zip(jobs, res, strict=True):
            print(f"| {j[0]} | {j[1]} | {j[2]:g} | {j[3]} | {r[-1][3]:.2f} | {r[-1][1]:.2f} | {r[-1][2]:.2f} | "
                  f"{r[-1][4]:.2f} |")
    print("| radio | σ | s | truth | linear: mean err | rms | censored: mean err | rms | misfit: median | max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for radio in a.radios.split(","):
        for sg in a.sigmas.split(","):
            sel = [r for j, r in zip(jobs, res, strict=True) if j[1] == radio and j[2] == float(sg)]
            for i, t in enumerate(at):
                rows = np.array([r[i][1:] for r in sel])
                mis = f"{np.median(rows[:, 3]):.2f} | {np.max(rows[:, 3]):.2f}"
                e_lin, e_cen = rows[:, 0] - rows[:, 2], rows[:, 1] - rows[:, 2]
                print(f"| {radio} | {sg} | {t} | {rows[:, 2].mean():.2f} | {e_lin.mean():+.2f} | "
                      f"{np.sqrt((e_lin**2).mean()):.2f} | {np.nanmean(e_cen):+.2f} | "
                      f"{np.sqrt(np.nanmean(e_cen**2)):.2f} | {mis} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
