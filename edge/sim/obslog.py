"""Write a simulated observation log (docs/protocol.md §2), e.g. for `qwatch-edge replay`.

Usage: ``python -m edge.sim.obslog SITE.yaml KEYS.json OUT.jsonl [--duration S] [--seed N]
[--escape-band ID --escape-at S] [--radio default|alt]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from edge.sim.scenarios import Scenario, demo_scenario
from edge.sim.simulator import Simulator
from protocols.site_config import load_band_keys, load_site_config


def write_log(sim: Simulator, out: TextIO, duration_s: float, *, step_s: float = 1.0) -> int:
    """Run `sim` for `duration_s` and write every observation; returns the line count."""
    n = 0
    t = sim.start_ts
    end = sim.start_ts + duration_s
    while t < end:
        t = min(t + step_s, end)
        lines = [o.to_json_line() for o in sim.advance(t)]
        if lines:
            out.write("\n".join(lines) + "\n")
            n += len(lines)
    return n


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("site", type=Path)
    ap.add_argument("keys", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=float, default=1_700_000_000.0)
    ap.add_argument("--escape-band", type=int, default=0)
    ap.add_argument("--escape-at", type=float, default=60.0)
    ap.add_argument("--radio", choices=("default", "alt"), default="default",
                    help="channel model (alt = the independent robustness model, edge/sim/radio_alt.py)")
    a = ap.parse_args(argv)
    site = load_site_config(a.site)
    keys = load_band_keys(a.keys)
    scenario: Scenario | None = None
    if a.escape_band:
        scenario = demo_scenario(site, escape_band=a.escape_band, escape_at_s=a.escape_at)
    sim = Simulator(site, keys, seed=a.seed, start_ts=a.start, scenario=scenario, radio=a.radio)
    with a.out.open("w", encoding="utf-8") as fh:
        n = write_log(sim, fh, a.duration)
    print(f"wrote {n} observations to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
