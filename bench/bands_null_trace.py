"""Why a null band breaches (issue 16, false-alarm side): re-run one null run of `bench.bands_breach` and
diagnose each false breach.

Re-runs the null run (same layout, channel, run seed, bands, duration: the `seed` of a `--save`d
`RunResult`, i.e. bands_breach `--seed` + 50,000 + k) through the real pipeline and, at every
`geofence_breach` raised, reports what the band was doing and what the detector believed:

* time since start (the first `window_startup_s` are start-up), the band's role (fence-stander or
  walker) and its true distance inside the allowed area, the alert's statistic and best outside point;
* the window test re-evaluated on that band at that second (side-effect free, `bands_recall_trace`'s
  `Tracer`): ``full`` (what the detector computes), ``exp`` (true path-loss exponent only), ``gains``
  (true receiver gains and band power only), ``oracle`` (both): which calibration error made it;
* the statistic the scheduler gave the rules over the 40 s before;
* the receivers that heard the band in the longest window (k of N @ mean corrected level), and every
  receiver's learned gain error (learned − true correction), learned floor against the true one (both
  referred to the antenna, corrected frame), plateau loss and health state.

Usage: .venv/bin/python -m bench.bands_null_trace --layout compound --radio default --sigma 6 \
       --seed 66003 [--bands 84] [--duration 1800] [--until T]
       .venv/bin/python -m bench.bands_null_trace --from-save RUNS.pkl [--radio alt] [--max-runs N]
       (every null run of a `bands_breach --save` file that had a false breach, up to its last one)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bands_breach import START, Channel, RunResult, build_scenario, feed_second, radio_params
from bench.bands_recall_trace import Tracer
from edge.bands.pipeline import BandPipeline
from edge.bands.window_test import run_test
from edge.sim import Simulator
from edge.sim.escapes import KINDS, AllowedArea
from edge.sim.keys import site_demo_keys
from edge.sim.sites import layout_site


class NullTracer(Tracer):
    """`Tracer` without the ``truepos`` variant (an escapee's true position as the outside candidate: a
    null band's is inside, and its candidate stub lacks the cell bounds the kernel reads since fd5cd9b)."""

    def evaluate(self, i: int, band: int, now: float, truth_xy: tuple[float, float]) -> dict[str, Any]:
        det = self.det
        out: dict[str, Any] = {v: [] for v in ("full", "exp", "gains", "oracle")}
        best = (-math.inf, (math.nan, math.nan, math.nan))
        heard = ""
        for w in det.windows:
            x = self.inputs(i, now, w)
            r = run_test(det.cand, x)
            out["full"].append(float(r.lr[0]))
            if r.lr[0] > best[0]:
                best = (float(r.lr[0]), (float(r.out_xy[0, 0]), float(r.out_xy[0, 1]), float(r.out_m[0])))
            out["exp"].append(float(run_test(det.cand, self.oracle(x, band, gains=False)).lr[0]))
            out["gains"].append(float(run_test(det.cand, self.oracle(x, band, exponent=False)).lr[0]))
            out["oracle"].append(float(run_test(det.cand, self.oracle(x, band)).lr[0]))
            if w == max(det.windows):
                ids = det.tracker.rx_ids
                heard = " ".join(f"{ids[r]}:{x.k[0, r]:.0f}/{x.n_sent[0]:.0f}@{x.xbar[0, r]:.0f}"
                                 for r in np.argsort(-x.k[0]) if x.k[0, r] > 0)
        out["best"] = best[1]
        out["heard"] = heard
        return out


def receivers_now(pipe: BandPipeline, sim: Simulator, tracer: Tracer, now: float) -> list[str]:
    """One line per receiver: learned gain error, learned vs true floor (corrected frame), loss, state."""
    det = tracer.det
    tr = pipe.tracker
    learned = tr.calibration.rx_bias + det._gain[0]
    err = learned - tracer.true_corr
    med = float(np.median(err))  # what all receivers share acts like a band-power offset
    ch = sim.channel
    rx_of = [sim.rx_ids.index(r) for r in tr.rx_ids]
    true_floor = (np.asarray(ch.rx_floor) - np.asarray(ch.rx_gain))[rx_of]
    health = pipe.receivers(now)
    return [f"{r}: gain err {err[k]:+.1f} dB ({err[k] - med:+.1f} vs median), "
            f"floor {det.hearing.floor[k]:.1f} (true {true_floor[k]:.1f}), "
            f"loss {det.hearing.loss[k]:.2f}, {health.get(r, {}).get('state', '-')}"
            for k, r in enumerate(tr.rx_ids)]


def diagnose(layout: str, radio: str, sigma: float, seed: int, n_bands: int, duration: float,
             loss: float = 0.15, gains: float = 2.0, watch: dict[int, list[float]] | None = None,
             series_s: int = 0) -> list[dict[str, Any]]:
    """Every breach raised in the run, with the diagnosis at that second; with `watch` (band -> breach
    times, e.g. from a --save file) and `series_s`, also the statistic every second before each."""
    ch = Channel(radio, sigma, loss, gains)
    site = layout_site(layout, n_bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    sc, _ = build_scenario(site, seed, 0, list(KINDS), duration, site.rules.breach_dwell_s)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc, radio=radio_params(site, ch))
    pipe = BandPipeline(site, keys, node="null-trace")
    tracer = NullTracer(pipe, sim)
    index = pipe.tracker.index
    area = AllowedArea(site, list(site.bands[0].allowed_zones))
    out: list[dict[str, Any]] = []
    series: dict[int, list[str]] = {}
    for s in range(1, int(duration) + 1):
        now = START + s
        alerts = feed_second(sim, pipe, now)
        for b, times in (watch or {}).items():
            if any(t - series_s <= s <= t + 0.5 for t in times):
                ev = tracer.evaluate(index[b], b, now, sim.truth(now)[b])
                series.setdefault(b, []).append(
                    f"{s} | {'/'.join(f'{v:.1f}' for v in ev['full'])} | {'/'.join(f'{v:.1f}' for v in ev['oracle'])}"
                    f" | {tracer.sched.get((index[b], math.floor(now)), math.nan):.1f} | {ev['heard']}")
        for a in alerts:
            if a.type != "geofence_breach" or a.state != "raised":
                continue
            b = int(getattr(a.subject, "band", -1))
            i = index[b]
            xy = sim.truth(now)[b]
            ev = tracer.evaluate(i, b, now, xy)
            det = tracer.det
            out.append({
                "t": s, "band": b, "role": "stander" if b in sc.scripts else "walker",
                "true_in_m": round(-float(area.out_m(np.array([xy]))[0]), 1), "xy": (round(xy[0], 1), round(xy[1], 1)),
                "detail": dict(a.detail) if hasattr(a, "detail") else {},
                "full": [round(v, 1) for v in ev["full"]], "exp": [round(v, 1) for v in ev["exp"]],
                "gains": [round(v, 1) for v in ev["gains"]], "oracle": [round(v, 1) for v in ev["oracle"]],
                "best": [round(v, 1) for v in ev["best"]], "heard": ev["heard"],
                "sched_before": [round(tracer.sched[(i, k)], 1)
                                 for k in range(math.floor(now) - 40, math.floor(now) + 1) if (i, k) in tracer.sched],
                "exponent": round(float(det.exponent.value(pipe.tracker.calibration.exponent)), 2),
                "true_exponent": round(tracer.true_exponent, 2),
                "band_power_err": round(tracer.true_power[b] - float(det._inputs(np.array([i]), now, det.windows[0],
                                        np.ones(len(pipe.tracker.rx_ids), dtype=bool)).power[0]), 1),
                "receivers": receivers_now(pipe, sim, tracer, now),
                "series": series.get(b, []),
            })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="compound")
    ap.add_argument("--radio", help="default or alt (with --from-save: only this radio's runs; default: both)")
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--seed", type=int, help="the null run's own seed (RunResult.seed)")
    ap.add_argument("--from-save", type=Path, help="a bands_breach --save file: diagnose its null runs' false breaches")
    ap.add_argument("--max-runs", type=int, default=1000, help="with --from-save: at most this many runs")
    ap.add_argument("--series", type=int, default=0, help="with --from-save: print each breaching band's statistic "
                    "every second over this many seconds before its breach")
    ap.add_argument("--bands", type=int, default=84)
    ap.add_argument("--duration", type=float, default=1800.0)
    ap.add_argument("--until", type=float, help="stop after this many seconds (the last false breach)")
    a = ap.parse_args(argv)
    if a.from_save is not None:
        # bands_breach pickles its results as __main__.RunResult / __main__.Channel (it runs as a script)
        main_mod = sys.modules["__main__"]
        main_mod.RunResult, main_mod.Channel = RunResult, Channel  # type: ignore[attr-defined]
        with a.from_save.open("rb") as fh:
            _recall, null, _bad = pickle.load(fh)  # our own file, written by bands_breach --save
        todo = [r for r in null if r.false_ts and (a.radio is None or r.channel.radio == a.radio)]
        for r in todo[:a.max_runs]:
            print(f"\n# ===== run {r.layout} {r.channel.radio} σ {r.channel.sigma:g} seed {r.seed}: false breaches at "
                  f"{[round(t) for t in r.false_ts]} s, bands {r.false_bands}")
            watch: dict[int, list[float]] = {}
            for t, b in zip(r.false_ts, r.false_bands, strict=True):
                watch.setdefault(b, []).append(t)
            one(r.layout, r.channel.radio, r.channel.sigma, r.seed, round(r.band_hours * 3600 / r.duration),
                min(r.duration, max(r.false_ts) + 1), r.channel.loss, r.channel.gains_db, watch, a.series)
        return 0
    if a.seed is None:
        ap.error("--seed or --from-save is required")
    until = min(a.duration, a.until) if a.until else a.duration
    one(a.layout, a.radio or "default", a.sigma, a.seed, a.bands, until)
    return 0


def one(layout: str, radio: str, sigma: float, seed: int, bands: int, until: float, loss: float = 0.15,
        gains: float = 2.0, watch: dict[int, list[float]] | None = None, series_s: int = 0) -> None:
    """Diagnose one run and print every breach."""
    t0 = time.process_time()
    rows = diagnose(layout, radio, sigma, seed, bands, until, loss, gains, watch, series_s)
    print(f"# {layout} {radio} σ {sigma:g} seed {seed}, {bands} bands, {until:.0f} s; "
          f"{len(rows)} breaches; load {os.getloadavg()[0]:.1f}")
    for r in rows:
        d = r["detail"]
        print(f"\n## t {r['t']} s, band {r['band']} ({r['role']}, true {r['true_in_m']} m inside at {r['xy']})")
        print(f"alert: evidence {d.get('evidence')}, at ({d.get('x')}, {d.get('y')}) out_m {d.get('out_m')}, "
              f"fix err_m {d.get('err_m')}")
        print(f"re-evaluated per window: full {r['full']} | true exponent {r['exp']} | true gains {r['gains']} | "
              f"both {r['oracle']}; best outside (x, y, out_m) {r['best']}")
        print(f"sched LR over the 40 s before: {r['sched_before']}")
        print(f"exponent {r['exponent']} (true {r['true_exponent']}); band power true − prior mean "
              f"{r['band_power_err']:+.1f} dB")
        print(f"heard (longest window, rx:k/N@level): {r['heard']}")
        for line in r["receivers"]:
            print("  " + line)
        if r["series"]:
            print("s | full per window | true gains+exponent | sched | heard (longest window)")
            for line in r["series"]:
                print(line)
    print(f"# CPU {time.process_time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
