"""The window test's separation at several thresholds, per learning variant (issue 16, tuning side).

A single threshold hides whether a change separates escapees from people inside or only moves both:
this runs `bench.bands_breach`'s scenarios (the same seeds: its null runs of 100 bands × 600 s, 2/3
walkers, 1/3 standing 0.5-3 m inside a fence, and its recall runs of 48 bands with 16 escapees) and
records every band's long-window statistic each tick. Per threshold T (+3 in the first 90 s, as the
rule) it counts upward crossings of bands that never left (null runs, and recall-run bands before
their escape) and the escapees whose statistic crossed T within breach_dwell_s + 30 s of the fence.
Crossings are not alerts (the rule raises once per episode and needs the window test's verdict
fresh), so compare variants with each other, not with `bench.bands_breach`'s counts.

Variants switch what the window detector learns from the bands' windows: `none`, `loss` (each
receiver's plateau loss, `window_loss`), `exponent` (`window_exponent`), `loss+exponent`.

Usage: .venv/bin/python -m bench.bands_window_roc [--variants none,loss] [--layouts demo,compound]
       [--radios alt,default] [--seed 16000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from bench.bands_breach import START, Channel, build_scenario, radio_params
from edge.bands.pipeline import BandPipeline
from edge.bands.window_exponent import ExponentParams
from edge.bands.window_loss import LossParams
from edge.sim import Simulator
from edge.sim.escapes import KINDS
from edge.sim.keys import site_demo_keys
from edge.sim.sites import BREACH_LAYOUTS, layout_site

THRESHOLDS = (11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 18.0)
VARIANTS = ("none", "loss", "exponent", "loss+exponent")


@dataclass
class Cell:
    """One run's counts per threshold."""

    layout: str
    radio: str
    variant: str
    kind: str  # null / recall
    escapes: int = 0
    crossings: dict[float, int] = field(default_factory=dict)
    caught: dict[float, int] = field(default_factory=dict)
    exponent: float = float("nan")
    loss: list[float] = field(default_factory=list)


def one(job: tuple[str, str, int, str, str]) -> Cell:
    """Simulate one run and count crossings and catches at every threshold."""
    layout, radio, seed, variant, kind = job
    n_bands, dur, n_esc = (48, 660.0, 16) if kind == "recall" else (100, 600.0, 0)
    site = layout_site(layout, n_bands, shadowing_db=6.0)
    keys = site_demo_keys(site)
    sc, escapes = build_scenario(site, seed, n_esc, list(KINDS), dur, site.rules.breach_dwell_s)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc,
                    radio=radio_params(site, Channel(radio, 6.0, 0.15, 2.0)))
    pipe = BandPipeline(site, keys, node="bench")
    det = pipe.detector
    assert det is not None  # the window test is the default
    det.s = replace(det.s, exact_lr=True)  # last_lr is read at every threshold below: the statistic itself
    det.exponent.p = ExponentParams(learn="exponent" in variant)
    det.loss.p = LossParams(learn="loss" in variant)
    esc = {e.band: e for e in escapes}
    above = {t: np.zeros(len(site.bands), dtype=bool) for t in THRESHOLDS}
    cell = Cell(layout, radio, variant, kind, len(escapes), dict.fromkeys(THRESHOLDS, 0), dict.fromkeys(THRESHOLDS, 0))
    caught: dict[float, set[int]] = {t: set() for t in THRESHOLDS}
    deadline = site.rules.breach_dwell_s + 30.0
    for s in range(1, int(dur) + 1):
        now = START + s
        for o in sim.advance(now):
            pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
        pipe.tick(now)
        lr = np.nan_to_num(det.last_lr, nan=-1e9)
        for t in THRESHOLDS:
            on = lr >= t + (3.0 if s < 90 else 0.0)
            for i in np.nonzero(on & ~above[t])[0].tolist():
                e = esc.get(site.bands[i].id)
                if e is None or s < e.cross_at:
                    cell.crossings[t] += 1
                elif s <= e.cross_at + deadline:
                    caught[t].add(e.band)
            above[t] = on
    cell.caught = {t: len(caught[t]) for t in THRESHOLDS}
    cell.exponent = det.exponent.value(pipe.tracker.calibration.exponent)
    cell.loss = [round(float(v), 2) for v in det.hearing.loss]
    return cell


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="none,loss")
    ap.add_argument("--layouts", default="demo,compound")
    ap.add_argument("--radios", default="alt,default")
    ap.add_argument("--seed", type=int, default=16_000)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    layouts = [v for v in a.layouts.split(",") if v]
    radios = [v for v in a.radios.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS] + [v for v in layouts if v not in BREACH_LAYOUTS] + \
        [v for v in radios if v not in ("alt", "default")]
    if bad or a.jobs < 1:
        print(f"bands_window_roc: unknown {', '.join(bad) or 'jobs'}; variants: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    # The seeds of bench.bands_breach --quick: recall runs seed + 6 (σ 6), null runs seed + 50,000 + k.
    jobs = [(lay, radio, a.seed + 6, v, "recall") for v in variants for radio in radios for lay in layouts]
    jobs += [(lay, radio, a.seed + 50_000 + k, v, "null") for v in variants for radio in radios
             for k, lay in enumerate(layouts)]
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {len(jobs)} runs, jobs {a.jobs}")
    with ProcessPoolExecutor(a.jobs) as ex:
        cells = list(ex.map(one, jobs, chunksize=1))
    head = "| variant | radio | " + " | ".join(f"T {t:g}: null crossings, recall {'/'.join(layouts)}"
                                                for t in THRESHOLDS) + " | exponent used |"
    print(head)
    print("|" + "---|" * (len(THRESHOLDS) + 3))
    for v in variants:
        for radio in radios:
            cs = [c for c in cells if c.variant == v and c.radio == radio]
            row = []
            for t in THRESHOLDS:
                null = sum(c.crossings[t] for c in cs)
                rec = "/".join(f"{c.caught[t]}" for lay in layouts for c in cs
                               if c.kind == "recall" and c.layout == lay)
                row.append(f"{null}, {rec}")
            ns = ", ".join(f"{c.exponent:.2f}" for c in cs)
            print(f"| {v} | {radio} | " + " | ".join(row) + f" | {ns} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
