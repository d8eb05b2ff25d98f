"""Null runs for the window breach test: the largest statistic of people who never leave (issue 16).

Walkers and fence standers (every second band 0.5-3 m inside a fence) on a layout × radio × σ, plus
four stand-outside escapees per run. The breach threshold is set out of reach, and every band's
latest long-window 2·ln LR is recorded each tick, so one run gives the false-alarm count at every
candidate threshold (upward crossings) and the escapees' recall within dwell + 30 s at each.

Usage: .venv/bin/python -m bench.bands_window_null [--layouts demo,perimeter] [--radios default,alt]
       [--sigmas 6] [--seeds 3] [--duration 600] [--thresholds 10,12,13,14,16,19]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from bench import bands_window_check as bw
from edge.bands.pipeline import BandPipeline
from edge.bands.rules import RuleParams
from edge.sim import RadioParams, Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.radio_alt import AltRadioParams
from edge.sim.scenarios import standing_near_fence, walking
from protocols.site_config import load_site_config


def one(layout: str, radio: str, sigma: float, seed: int, dur: float
        ) -> tuple[list[tuple[int, int, float]], dict[int, list[tuple[float, float]]], float, int]:
    site = load_site_config(bw.LAYOUTS[layout])
    site = site.model_copy(update={"radio": site.radio.model_copy(update={"shadowing_db": sigma})})
    keys = site_demo_keys(site)
    sc = walking(site, seed)
    ids = [b.id for b in site.bands]
    rng = np.random.default_rng(seed)
    for i, b in enumerate(ids):
        if i % 2 == 1:
            sc.scripts[b] = standing_near_fence(site, b, seed, float(rng.uniform(0.5, 3.0)))
    esc: dict[int, float] = {}
    for j, b in enumerate(ids[2::7][:4]):
        cross = 60.0 + (dur - 200) * j / 4
        sc.scripts[b], _ = bw.stand_out(site, b, seed, cross, float(rng.uniform(20, 35)), None)
        esc[b] = cross
    start = 1_700_000_000.0
    rp = AltRadioParams.like(sigma, 0.15) if radio == "alt" else RadioParams(shadowing_db=sigma, base_loss=0.15)
    sim = Simulator(site, keys, seed=seed, start_ts=start, scenario=sc, radio=rp)
    pipe = BandPipeline(site, keys, node="n", rule_params=RuleParams.from_rules(site.rules, window_threshold=1e9))
    det = pipe.detector
    assert det is not None
    null: list[tuple[int, int, float]] = []
    esc_lr: dict[int, list[tuple[float, float]]] = {b: [] for b in esc}
    for s in range(1, int(dur) + 1):
        now = start + s
        for o in sim.advance(now):
            pipe.observe_raw(o)
        pipe.tick(now)
        for i, b in enumerate(ids):
            v = float(det.last_lr[i])
            if b in esc:
                esc_lr[b].append((s - esc[b], v))
            elif v == v:
                null.append((b, s, v))
    return null, esc_lr, site.rules.breach_dwell_s, len(ids) - len(esc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", default="demo,perimeter")
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--sigmas", default="6")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--thresholds", default="10,12,13,14,16,19")
    a = ap.parse_args()
    ts = [float(x) for x in a.thresholds.split(",")]
    bh: dict[str, float] = defaultdict(float)
    fa: dict[tuple[str, float], int] = defaultdict(int)
    rec: dict[tuple[str, float], int] = defaultdict(int)
    n_esc: dict[str, int] = defaultdict(int)
    peak: dict[str, float] = defaultdict(lambda: -1e9)
    for layout in a.layouts.split(","):
        for radio in a.radios.split(","):
            for sigma in (float(x) for x in a.sigmas.split(",")):
                key = f"{layout} {radio} σ{sigma:.0f}"
                for seed in range(a.seeds):
                    null, esc, dwell, n_null = one(layout, radio, sigma, seed, a.duration)
                    bh[key] += n_null * a.duration / 3600.0
                    by_band: dict[int, list[float]] = defaultdict(list)
                    for b, _, v in null:
                        by_band[b].append(v)
                        peak[key] = max(peak[key], v)
                    for t in ts:
                        for seq in by_band.values():
                            above = False
                            for v in seq:
                                fa[key, t] += int(v >= t and not above)
                                above = v >= t
                    for seq2 in esc.values():
                        n_esc[key] += 1
                        m = max([v for dt, v in seq2 if 0 <= dt <= dwell + 30 and v == v] or [-1e9])
                        for t in ts:
                            rec[key, t] += int(m >= t)
                head = " | ".join(f"T {t:g}: events, recall" for t in ts)
                if len(bh) == 1:
                    print(f"| cell | band-h | null peak | {head} |")
                    print("|---" * (3 + len(ts)) + "|")
                cells = " | ".join(f"{fa[key, t]}, {rec[key, t]}/{n_esc[key]}" for t in ts)
                print(f"| {key} | {bh[key]:.1f} | {peak[key]:.1f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
