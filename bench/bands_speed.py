"""Wristband pipeline speed on a 500-band site (issue 3, benchmark 2).

Measures, in one process on one core: decode + verify alone (the baseline, lead's verifier),
the whole pipeline (verify + track + rules, ticking once per simulated second), and `replay`
over a JSON Lines log (parse included), with peak RSS. Extrapolates to one hour of the site.

Usage: .venv/bin/python bench/bands_speed.py [--seconds S]
"""

from __future__ import annotations

import argparse
import io
import platform
import resource
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.bands.pipeline import BandPipeline
from edge.replay import run_replay
from edge.sim import Simulator
from edge.sim.keys import demo_keys
from protocols.site_config import SiteConfig
from protocols.verify import AdvertVerifier


def big_site(n_bands: int = 500) -> SiteConfig:
    """10 blocks of 50 people, 30 x 16 m each, in a 5 x 2 layout; a receiver inside each block and 6 outside."""
    zones, receivers = [], []
    for i in range(10):
        x0, y0 = (i % 5) * 34.0, (i // 5) * 20.0
        zones.append({"id": f"block-{i}", "kind": "permitted",
                      "polygon": [[x0, y0], [x0 + 30, y0], [x0 + 30, y0 + 16], [x0, y0 + 16]]})
        receivers.append({"id": f"rx-{i}", "position": [x0 + 15, y0 + 8], "source": "sim"})
    for j, (x, y) in enumerate([(0, -10), (85, -10), (170, -10), (0, 46), (85, 46), (170, 46)]):
        receivers.append({"id": f"rx-o{j}", "position": [x, y], "source": "sim"})
    bands = [{"id": 1000 + b, "allowed_zones": [f"block-{b % 10}"]} for b in range(n_bands)]
    beacons = [{"id": 9000 + i, "position": [(i % 5) * 34.0 + 3, (i // 5) * 20.0 + 3]} for i in range(4)]
    return SiteConfig.model_validate({"site": {"id": "bench-500"}, "zones": zones, "receivers": receivers,
                                      "bands": bands, "beacons": beacons})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="simulated seconds")
    a = ap.parse_args()
    con = Console(width=160)
    site = big_site()
    keys = demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons])
    sim = Simulator(site, keys, seed=1, start_ts=1_700_000_000.0)
    t = time.perf_counter()
    obs = sim.advance(sim.start_ts + a.seconds)
    sim_s = time.perf_counter() - t
    n = len(obs)
    con.print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
              f"{n} observations ({n / a.seconds:.0f}/s, {n / sim.sent:.1f} receivers per advert) in {sim_s:.1f} s")

    ver = AdvertVerifier(keys, site.company_id)
    t = time.perf_counter()
    for o in obs:
        ver.verify(o.ts, o.company_id, o.data)
    base_s = time.perf_counter() - t

    pipe = BandPipeline(site, keys, node="bench")
    tick_t = np.floor(obs[0].ts) + 1.0
    ticks = 0
    tick_s = 0.0
    t = time.perf_counter()
    for o in obs:
        while o.ts >= tick_t:
            t_tick = time.perf_counter()
            pipe.tick(tick_t)
            tick_s += time.perf_counter() - t_tick
            tick_t += 1.0
            ticks += 1
        pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
    full_s = time.perf_counter() - t

    text = "\n".join(o.to_json_line() for o in obs) + "\n"
    pipe2 = BandPipeline(site, keys, node="bench")
    t = time.perf_counter()
    res = run_replay(pipe2, io.StringIO(text), lambda _a: None)
    replay_s = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    tab = Table(title=f"500-band site, {a.seconds:.0f} s simulated, one core")
    for c in ("stage", "observations/s", "vs verify-only baseline", "1 h of this site would take"):
        tab.add_column(c)
    hour = 3600.0 / a.seconds
    tab.add_row("decode + verify only (baseline)", f"{n / base_s:,.0f}", "1.00", f"{base_s * hour:.0f} s")
    tab.add_row(f"pipeline: verify+track+rules ({ticks} ticks)", f"{n / full_s:,.0f}", f"{base_s / full_s:.2f}",
                f"{full_s * hour:.0f} s")
    tab.add_row("replay: parse + pipeline", f"{res.observations / replay_s:,.0f}", f"{base_s / replay_s:.2f}",
                f"{replay_s * hour:.0f} s")
    tab.add_row("  of which: per-observation path", f"{n / (full_s - tick_s):,.0f}",
                f"{base_s / (full_s - tick_s):.2f}", f"{(full_s - tick_s) * hour:.0f} s")
    tab.add_row(f"  of which: 1 Hz ticks, {1000 * tick_s / max(ticks, 1):.1f} ms each", "-", "-",
                f"{tick_s * hour:.0f} s")
    con.print(tab)
    con.print(f"peak RSS of this process (sim + log in memory + pipelines): {peak_mb:.0f} MB; target "
              f">= 50,000 adverts/s per core")


if __name__ == "__main__":
    main()
