"""Quick check of the breach detector on stand-outside escapes and null runs (issue 16, detector side).

Per layout × radio × σ: people walk in their zone, a third stand 0.5-3 m inside a fence, and some
escape over the outer fence, walk 20-35 m out and stand there (some return after 2-4 min). Reports
recall within breach_dwell_s + 30 s, clear latency after the return, and false breaches per 100
band-hours with the 95 % upper bound. Optionally one receiver's gain is off by `--bad-gain` dB or it
is deaf below `--deaf` dBm (the simulated hardware, not the site config). The full harness of the
issue is bench/bands_breach.py; this one is the detector's quick loop.

Usage: .venv/bin/python -m bench.bands_window_check [--layouts demo,perimeter] [--radios default,alt]
       [--sigmas 4,6] [--seeds N] [--duration S] [--escapes K] [--rule KEY=VALUE ...] [--bad-gain DB]
       [--deaf DBM] [--bad-rx ID] [--null]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.bands.pipeline import BandPipeline
from edge.bands.rules import RuleParams
from edge.sim import RadioParams, Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.mobility import Route, Switch
from edge.sim.radio_alt import AltRadioParams
from edge.sim.scenarios import ESCAPE_SPEED, BandScript, band_rng, escape, standing_near_fence, walking
from protocols.site_config import SiteConfig, load_site_config

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"demo": ROOT / "config/examples/demo-site.yaml", "perimeter": ROOT / "config/examples/perimeter-site.yaml"}


@dataclass
class Cell:
    layout: str
    radio: str
    sigma: float
    escapes: int = 0
    caught: int = 0
    delays: list[float] = field(default_factory=list)
    returns: int = 0
    cleared: int = 0
    clear_delays: list[float] = field(default_factory=list)
    false: int = 0
    band_hours: float = 0.0
    false_detail: list[str] = field(default_factory=list)


def stand_out(site: SiteConfig, band: int, seed: int, cross_at: float, out_m: float,
              back_after: float | None) -> tuple[BandScript, float | None]:
    """Over the fence, `out_m` out, then stand (wandering ±2 m); optionally walk back in after `back_after` s."""
    s = escape(site, band, seed, cross_at=cross_at, how="fence", out_m=out_m)
    mover = s.mover
    route = mover.then if isinstance(mover, Switch) else mover
    assert isinstance(route, Route)
    far = route.p[-1]
    inner = route.p[1]
    t_far = float(route.t[-1])
    rng = band_rng(seed, band, "wander")
    pts, ts = [far], [t_far]
    t = t_far
    end = t_far + (back_after if back_after is not None else 3600.0)
    while t < end:
        t += float(rng.uniform(15, 40))
        pts.append(far + rng.uniform(-2.0, 2.0, 2))
        ts.append(t)
    wander = Route(ts, np.array(pts).tolist())
    after: Any = wander
    ret = None
    if back_after is not None:
        last = pts[-1]
        d = float(np.linalg.norm(np.asarray(inner) - last))
        back = Route([ts[-1], ts[-1] + d / ESCAPE_SPEED, ts[-1] + d / ESCAPE_SPEED + 3600.0],
                     [list(last), list(inner), list(inner - (far - inner) / np.linalg.norm(far - inner) * 3.0)])
        after = Switch(wander, back, ts[-1])
        ret = ts[-1] + (d - 1.0) / ESCAPE_SPEED  # the fence is 1 m before `inner`
    return BandScript(mover=Switch(mover, after, t_far), escape_at=cross_at), ret


def run(layout: str, radio: str, sigma: float, seed: int, duration: float, n_esc: int, rules: dict[str, Any],
        bad: tuple[str | None, float, float | None], null: bool) -> tuple[Cell, dict[int, tuple[float, float | None]]]:
    site = load_site_config(LAYOUTS[layout])
    site = site.model_copy(update={"radio": site.radio.model_copy(update={"shadowing_db": sigma})})
    keys = site_demo_keys(site)
    sc = walking(site, seed)
    ids = [b.id for b in site.bands]
    rng = np.random.default_rng(seed)
    esc: dict[int, tuple[float, float | None]] = {}  # band -> (cross, return-inside time)
    for i, b in enumerate(ids):
        if i % 3 == 1:
            sc.scripts[b] = standing_near_fence(site, b, seed, float(rng.uniform(0.5, 3.0)))
    if not null:
        for j, b in enumerate(ids[2::7][:n_esc]):
            cross = 60.0 + (duration - 300.0) * j / max(n_esc, 1) + float(rng.uniform(0, 30))
            out_m = float(rng.uniform(20, 35))
            back = float(rng.uniform(120, 240)) if j % 2 == 1 else None
            sc.scripts[b], ret = stand_out(site, b, seed, cross, out_m, back)
            esc[b] = (cross, ret)
    start = 1_700_000_000.0
    rp: RadioParams | AltRadioParams = (AltRadioParams.like(sigma, 0.15) if radio == "alt" else
                                        RadioParams(path_loss_exponent=site.radio.path_loss_exponent,
                                                    shadowing_db=sigma, base_loss=0.15))
    sim = Simulator(site, keys, seed=seed, start_ts=start, scenario=sc, radio=rp)
    bad_rx, bad_gain, deaf = bad
    if bad_rx is not None:
        r = sim.rx_ids.index(bad_rx)
        sim.channel.rx_gain[r] += bad_gain
        if deaf is not None and hasattr(sim.channel, "rx_floor"):
            sim.channel.rx_floor[r] = deaf
    pipe = BandPipeline(site, keys, node="check", rule_params=RuleParams.from_rules(site.rules, **rules))
    alerts = []
    for s in range(1, int(duration) + 1):
        now = start + s
        for o in sim.advance(now):
            if deaf is not None and bad_rx is not None and o.rx == bad_rx and o.rssi < deaf:
                continue
            alerts += pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
        alerts += pipe.tick(now)
    cell = Cell(layout, radio, sigma)
    dwell, clear = site.rules.breach_dwell_s, site.rules.clear_dwell_s
    first: dict[int, float] = {}
    cleared: dict[int, float] = {}
    for a in alerts:
        if a.type != "geofence_breach":
            continue
        b = getattr(a.subject, "band", -1)
        t = a.ts - start
        if b in esc and t >= esc[b][0]:
            if a.state == "raised":
                first.setdefault(b, t)
            elif esc[b][1] is not None and t >= (esc[b][1] or 0):
                cleared.setdefault(b, t)
        elif a.state == "raised":
            cell.false += 1
            d = a.detail
            cell.false_detail.append(f"seed {seed} band {b} t={t:.0f} x={d.get('x')} y={d.get('y')} "
                                     f"out={d.get('out_m')} ev={d.get('evidence')} {d.get('reason')}")
    for b, (cross, ret) in esc.items():
        cell.escapes += 1
        t_raise = first.get(b)
        if t_raise is not None and t_raise <= cross + dwell + 30.0:
            cell.caught += 1
            cell.delays.append(t_raise - cross)
        if ret is not None and ret < duration - clear - 30:
            cell.returns += 1
            c = cleared.get(b)
            if c is not None and c <= ret + clear + 20.0:
                cell.cleared += 1
            if c is not None:
                cell.clear_delays.append(c - ret)
    normal = len(ids) - len(esc)
    cell.band_hours = (normal * duration + sum(v[0] for v in esc.values())) / 3600.0
    return cell, esc


def upper95(n: int, hours: float) -> float:
    """One-sided 95 % Poisson upper bound on the rate per 100 band-hours."""
    lo, hi = 0.0, 10.0 * n + 10.0
    for _ in range(100):  # λ with P(X <= n | λ) = 0.05, by bisection
        lam = (lo + hi) / 2
        cdf = sum(math.exp(-lam + i * math.log(lam) - math.lgamma(i + 1)) for i in range(n + 1))
        lo, hi = (lam, hi) if cdf > 0.05 else (lo, lam)
    return 100.0 * hi / max(hours, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", default="demo,perimeter")
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--sigmas", default="4,6")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--escapes", type=int, default=4)
    ap.add_argument("--rule", action="append", default=[])
    ap.add_argument("--bad-rx", default=None)
    ap.add_argument("--bad-gain", type=float, default=0.0)
    ap.add_argument("--deaf", type=float, default=None)
    ap.add_argument("--null", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    rules: dict[str, Any] = {}
    for kv in a.rule:
        k, v = kv.split("=", 1)
        rules[k] = v if k == "breach_test" else float(v)
    t0 = time.process_time()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"# {platform.node()} load {load} rules {rules} bad {a.bad_rx} {a.bad_gain} deaf {a.deaf} null {a.null}")
    print("| layout | radio | σ | recall (dwell+30) | delay p50/max s | clears (clear+20) | clear p50 s | "
          "false (n) / band-h | /100 bh (95 % ub) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layout in a.layouts.split(","):
        for radio in a.radios.split(","):
            for sg in (float(x) for x in a.sigmas.split(",")):
                tot = Cell(layout, radio, sg)
                for seed in range(a.seed0, a.seed0 + a.seeds):
                    c, _ = run(layout, radio, sg, seed, a.duration, a.escapes, rules, (a.bad_rx, a.bad_gain, a.deaf),
                               a.null)
                    for f in ("escapes", "caught", "returns", "cleared", "false"):
                        setattr(tot, f, getattr(tot, f) + getattr(c, f))
                    tot.delays += c.delays
                    tot.clear_delays += c.clear_delays
                    tot.band_hours += c.band_hours
                    tot.false_detail += c.false_detail
                d = f"{np.median(tot.delays):.0f}/{max(tot.delays):.0f}" if tot.delays else "-"
                cd = f"{np.median(tot.clear_delays):.0f}" if tot.clear_delays else "-"
                rate = 100.0 * tot.false / max(tot.band_hours, 1e-9)
                ub = upper95(tot.false, tot.band_hours)
                print(f"| {layout} | {radio} | {sg:.0f} | {tot.caught}/{tot.escapes} | {d} | "
                      f"{tot.cleared}/{tot.returns} | {cd} | {tot.false} / {tot.band_hours:.1f} | "
                      f"{rate:.2f} ({ub:.2f}) |",
                      flush=True)
                if a.verbose:
                    for line in tot.false_detail:
                        print("   ", line)
    print(f"# CPU {time.process_time() - t0:.0f} s")


if __name__ == "__main__":
    main()
