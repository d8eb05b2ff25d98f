"""Variants of the window test's model compared threshold-free on the very same runs (issue 16).

`bench.bands_window_roc` switches what the detector learns; this one changes the test itself. It runs
`bench.bands_breach`'s scenarios (same seeds: recall runs of 48 bands with 16 escapees, null runs of 100
bands × 600 s, 2/3 walkers, 1/3 standing 0.5-3 m inside a fence), lets the detector on main drive the
schedule and its learning, and every time it tests a band over a long window also evaluates each
variant on the same inputs. Per variant and threshold T (+3 in the first 90 s, as the rule) it counts
upward crossings of bands that never left and escapees whose statistic crossed T within
breach_dwell_s + 30 s, and it keeps the largest null statistic (after the first 90 s) and each
escapee's best statistic within the deadline, so any threshold can be read off afterwards.

Variants: `base` (main), `profile` (exponent profiled over n̂ + 0, 0.2, 0.4 in both hypotheses:
`WindowParams.exponent_up`), `profile02` (n̂ + 0, 0.2), `ntrue` (the simulator's true exponent: a
diagnostic, not a product option), `n+0.3`, `shift-3` (every band 3 dB weaker than its advertised
power: a site-wide body loss), `sb4` (band-gain prior sd 4 dB).

Usage: .venv/bin/python -m bench.bands_window_variants [--variants base,profile] [--layouts demo,compound]
       [--radios alt,default] [--seed 16000] [--sigma 6] [--jobs 2] [--save FILE]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bench.bands_breach import START, Channel, build_scenario, radio_params
from edge.bands import window_detector
from edge.bands.pipeline import BandPipeline
from edge.bands.window_test import Candidates, LinkInputs, WindowResult
from edge.sim import Simulator
from edge.sim.escapes import KINDS
from edge.sim.keys import site_demo_keys
from edge.sim.sites import BREACH_LAYOUTS, layout_site

THRESHOLDS = (9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 18.0)
Test = Callable[..., WindowResult]  # run_test(candidates, inputs[, inside_only])
Variant = Callable[[Candidates, LinkInputs, WindowResult, float, Test], np.ndarray]


def _with(**kw: Any) -> Variant:
    def f(c: Candidates, x: LinkInputs, res: WindowResult, n_true: float, test: Test) -> np.ndarray:
        return test(c, replace(x, **kw)).lr
    return f


VARIANTS: dict[str, Variant] = {
    "base": lambda c, x, res, n_true, test: res.lr,
    "profile": _with(exponent_up=(0.0, 0.2, 0.4), profile_above=-2.0),
    "profile02": _with(exponent_up=(0.0, 0.2), profile_above=-2.0),
    "ntrue": lambda c, x, res, n_true, test: test(c, replace(x, exponent=n_true)).lr,
    "n+0.3": lambda c, x, res, n_true, test: test(c, replace(x, exponent=x.exponent + 0.3)).lr,
    "shift-3": lambda c, x, res, n_true, test: test(c, replace(x, power=x.power - 3.0)).lr,
    "sb4": lambda c, x, res, n_true, test: test(c, replace(x, sb=np.full_like(x.sb, 4.0))).lr,
}


@dataclass
class Run:
    """One run's counts per variant and threshold, and its statistics' extremes."""

    layout: str
    radio: str
    kind: str
    seed: int
    n_true: float
    n_cal: float = float("nan")
    escapes: int = 0
    crossings: dict[tuple[str, float], int] = field(default_factory=dict)
    caught: dict[tuple[str, float], int] = field(default_factory=dict)
    null_peak: dict[str, float] = field(default_factory=dict)
    escape_peak: dict[str, dict[int, float]] = field(default_factory=dict)


def one(job: tuple[str, str, int, str, float, tuple[str, ...]]) -> Run:
    """Simulate one run with every variant evaluated beside the detector."""
    layout, radio, seed, kind, sigma, names = job
    n_bands, dur, n_esc = (48, 660.0, 16) if kind == "recall" else (100, 600.0, 0)
    site = layout_site(layout, n_bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    sc, escapes = build_scenario(site, seed, n_esc, list(KINDS), dur, site.rules.breach_dwell_s)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc,
                    radio=radio_params(site, Channel(radio, sigma, 0.15, 2.0)))
    pipe = BandPipeline(site, keys, node="bench")
    det = pipe.detector
    assert det is not None  # the window test is the default
    n_true = float(getattr(sim.channel, "exponent", sim.channel.p.path_loss_exponent))
    out = Run(layout, radio, kind, seed, n_true, escapes=len(escapes))
    seen: dict[tuple[str, int], float] = {}
    last: dict[str, Any] = {"rows": None, "window": None}
    inputs = det._inputs
    test: Test = getattr(window_detector, "run_test")  # noqa: B009  (patched below: not a re-export)

    def spy_inputs(rows: np.ndarray, now: float, window_s: float, listen: np.ndarray,
                   blocks: bool = True) -> LinkInputs:
        last["rows"], last["window"] = rows, window_s
        return inputs(rows, now, window_s, listen, blocks)

    def spy_test(c: Candidates, x: LinkInputs, inside_only: bool = False) -> WindowResult:
        res = test(c, x, inside_only)
        if inside_only or last["window"] == det.p.clear_window_s or last["rows"] is None:
            return res
        for name in names:
            lr = VARIANTS[name](c, x, res, n_true, test)
            for j, i in enumerate(last["rows"].tolist()):
                if not np.isnan(lr[j]):
                    seen[(name, i)] = max(seen.get((name, i), -1e9), float(lr[j]))
        return res

    det._inputs = spy_inputs  # type: ignore[method-assign]
    setattr(window_detector, "run_test", spy_test)  # noqa: B010  (this process only: one run each)
    esc = {e.band: e for e in escapes}
    cur = {n: np.full(n_bands, -1e9) for n in names}
    above = {(n, t): np.zeros(n_bands, dtype=bool) for n in names for t in THRESHOLDS}
    caught: dict[tuple[str, float], set[int]] = {(n, t): set() for n in names for t in THRESHOLDS}
    out.crossings = dict.fromkeys(above, 0)
    out.null_peak = dict.fromkeys(names, -1e9)
    out.escape_peak = {n: {} for n in names}
    deadline = site.rules.breach_dwell_s + 30.0
    for s in range(1, int(dur) + 1):
        now = START + s
        for o in sim.advance(now):
            pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
        seen.clear()
        pipe.tick(now)
        for (n, i), v in seen.items():
            cur[n][i] = v
        for n in names:
            for t in THRESHOLDS:
                on = cur[n] >= t + (3.0 if s < 90 else 0.0)
                for i in np.nonzero(on & ~above[(n, t)])[0].tolist():
                    e = esc.get(site.bands[i].id)
                    if e is None or s < e.cross_at:
                        out.crossings[(n, t)] += 1
                    elif s <= e.cross_at + deadline:
                        caught[(n, t)].add(e.band)
                above[(n, t)] = on
            for i, b in enumerate(site.bands):
                e = esc.get(b.id)
                if (e is None or s < e.cross_at) and s >= 90:
                    out.null_peak[n] = max(out.null_peak[n], float(cur[n][i]))
                elif e is not None and e.cross_at <= s <= e.cross_at + deadline:
                    out.escape_peak[n][b.id] = max(out.escape_peak[n].get(b.id, -1e9), float(cur[n][i]))
    out.caught = {k: len(v) for k, v in caught.items()}
    out.n_cal = float(pipe.tracker.calibration.exponent)
    return out


def report(runs: list[Run], names: list[str]) -> None:
    """Markdown: per variant and radio, null crossings and recall per layout at every threshold."""
    layouts = sorted({r.layout for r in runs})
    head = " | ".join(f"T {t:g}" for t in THRESHOLDS)
    print(f"| variant | radio | {head} | null peak | escapee best (median) |")
    print("|" + "---|" * (len(THRESHOLDS) + 4))
    for n in names:
        for radio in sorted({r.radio for r in runs}):
            rs = [r for r in runs if r.radio == radio]
            cells = []
            for t in THRESHOLDS:
                null = sum(r.crossings[(n, t)] for r in rs)
                rec = "/".join(str(sum(r.caught[(n, t)] for r in rs if r.kind == "recall" and r.layout == lay))
                               for lay in layouts)
                cells.append(f"{null}, {rec}")
            peak = max(r.null_peak[n] for r in rs)
            best = [v for r in rs if r.kind == "recall" for v in r.escape_peak[n].values()]
            med = f"{np.median(best):.1f}" if best else "-"
            print(f"| {n} | {radio} | " + " | ".join(cells) + f" | {peak:.1f} | {med} |")
    print(f"(cells: null crossings, recall {'/'.join(layouts)} of the escapes in one recall run each)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base,profile")
    ap.add_argument("--layouts", default="demo,compound")
    ap.add_argument("--radios", default="alt,default")
    ap.add_argument("--seed", type=int, default=16_000)
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--save", default=None)
    a = ap.parse_args(argv)
    names = [v for v in a.variants.split(",") if v]
    layouts = [v for v in a.layouts.split(",") if v]
    radios = [v for v in a.radios.split(",") if v]
    bad = [v for v in names if v not in VARIANTS] + [v for v in layouts if v not in BREACH_LAYOUTS] + \
        [v for v in radios if v not in ("alt", "default")]
    if bad or a.jobs < 1 or not 0 < a.sigma <= 20:
        print(f"bands_window_variants: bad {', '.join(bad) or 'jobs/sigma'}; variants: {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    # The seeds of bench.bands_breach: recall runs seed + σ, null runs seed + 50,000 + k.
    sig = int(a.sigma)
    jobs = [(lay, radio, a.seed + sig, "recall", a.sigma, tuple(names)) for radio in radios for lay in layouts]
    jobs += [(lay, radio, a.seed + 50_000 + k, "null", a.sigma, tuple(names)) for radio in radios
             for k, lay in enumerate(layouts)]
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {len(jobs)} runs, jobs {a.jobs}")
    # One run per worker process: each patches the detector module's test function for its own run.
    with ProcessPoolExecutor(a.jobs, max_tasks_per_child=1) as ex:
        runs = list(ex.map(one, jobs, chunksize=1))
    if a.save:
        with open(a.save, "wb") as fh:
            pickle.dump(runs, fh)
    report(runs, names)
    for r in runs:
        print(f"{r.layout} {r.radio} {r.kind} seed {r.seed}: exponent true {r.n_true:.2f}, calibrated {r.n_cal:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
