"""Cost of the wristband pipeline's 1 Hz tick on a 500-band site: compiled kernels vs the numpy reference.

Two `BandPipeline`s get the same simulated observations (bench/bands_speed.py's 500-band site: 16
receivers, 4 beacons); each second both tick, in alternating order, and every tick is timed with
its stages (tracker.estimate = RSSI filter + calibration + fit; the breach likelihood test; the
rest of the fix assembly; the per-band rules). The numpy reference (`LocateParams.compiled=False`)
is the baseline measured in the same run. The two engines' positions are compared tick by tick.
`--cold` also measures the first tick of a fresh process: with an empty kernel cache (JIT
compile), with the cache warm, and with the numpy reference.

Usage: .venv/bin/python -m bench.bands_tick [--seconds S] [--warmup S] [--cold]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.bands_speed import big_site  # the same 500-band site as the whole-pipeline benchmark
from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.keys import demo_keys

STAGES = ("tick", "estimate", "evidence", "fix assembly", "rules + loop")
# CPU time of this thread: the 2 cores are shared, and wall time counts other jobs' time slices.
CLOCK = time.thread_time


class Timed:
    """A pipeline whose tick stages are timed (three wrapped calls per tick; the rest is by difference)."""

    def __init__(self, pipe: BandPipeline, compiled: bool) -> None:
        self.pipe = pipe
        self.set_engine(compiled)
        self.t: dict[str, list[float]] = {s: [] for s in STAGES}
        self.wall: list[float] = []
        self.xy: list[np.ndarray] = []
        self._cur: dict[str, float] = {}
        est, fixes, evid = pipe.tracker.estimate, pipe._fixes_from, pipe._evidence

        def estimate(now: float, only: Any = None) -> Any:
            t = CLOCK()
            out = est(now, only)
            self._cur["estimate"] = CLOCK() - t
            self.xy.append(out.xy.copy())
            return out

        def fixes_from(now: float, e: Any) -> Any:
            t = CLOCK()
            out = fixes(now, e)
            self._cur["fixes"] = CLOCK() - t
            return out

        def evidence(rows: Any, band_idx: Any, e: Any) -> Any:
            t = CLOCK()
            out = evid(rows, band_idx, e)
            self._cur["evidence"] = CLOCK() - t
            return out

        pipe.tracker.estimate = estimate  # type: ignore[method-assign]
        pipe._fixes_from = fixes_from  # type: ignore[method-assign,assignment]
        pipe._evidence = evidence  # type: ignore[method-assign,assignment]

    def set_engine(self, compiled: bool) -> None:
        tr = self.pipe.tracker
        tr.locate_params = dataclasses.replace(tr.locate_params, compiled=compiled)

    def tick(self, now: float, record: bool, compiled: bool) -> None:
        self.set_engine(compiled)  # the reception floor update replaces locate_params
        self._cur = {"estimate": 0.0, "fixes": 0.0, "evidence": 0.0}
        w = time.perf_counter()
        t = CLOCK()
        self.pipe.tick(now)
        total = CLOCK() - t
        if record:
            self.wall.append(time.perf_counter() - w)
            c = self._cur
            self.t["tick"].append(total)
            self.t["estimate"].append(c["estimate"])
            self.t["evidence"].append(c["evidence"])
            self.t["fix assembly"].append(c["fixes"] - c["evidence"])
            self.t["rules + loop"].append(total - c["estimate"] - c["fixes"])


# Run in a fresh interpreter: nothing of qwatch (or numba) imported yet.
CHILD = r"""
import dataclasses, json, sys, time
w0, c0 = time.perf_counter(), time.process_time()
sys.path.insert(0, sys.argv[2])
import edge.bands.locate as L
if sys.argv[1] == "numpy":
    d = list(L.LocateParams.__init__.__defaults__); d[-1] = False; L.LocateParams.__init__.__defaults__ = tuple(d)
from edge.bands.pipeline import BandPipeline
from bands_speed import big_site
from edge.sim import Simulator
from edge.sim.keys import demo_keys
out = {"import": (time.perf_counter() - w0, time.process_time() - c0)}
site = big_site()
keys = demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons])
sim = Simulator(site, keys, seed=1, start_ts=1_700_000_000.0)
obs = sim.advance(sim.start_ts + 11.0)
w, c = time.perf_counter(), time.process_time()
pipe = BandPipeline(site, keys, node="bench")
out["pipeline built"] = (time.perf_counter() - w, time.process_time() - c)
for name, now, since in (("first tick", 10.0, 0.0), ("second tick", 11.0, 10.0)):
    for o in obs:
        if sim.start_ts + since <= o.ts < sim.start_ts + now:
            pipe.observe_raw(o)
    w, c = time.perf_counter(), time.process_time()
    pipe.tick(sim.start_ts + now)
    out[name] = (time.perf_counter() - w, time.process_time() - c)
print(json.dumps(out))
"""
COLD_PHASES = ("import", "pipeline built", "first tick", "second tick")


def cold_start(mode: str) -> dict[str, list[float]]:
    """Import + build a pipeline + two ticks in a fresh process; (wall, CPU) seconds per phase."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as tmp:
        env["NUMBA_CACHE_DIR"] = tmp  # empty: every kernel compiles
        if mode == "warm":  # fill the cache first
            subprocess.run([sys.executable, "-c", CHILD, "empty", here], env=env, check=True, capture_output=True)
        out = subprocess.run([sys.executable, "-c", CHILD, mode, here], env=env, check=True, capture_output=True,
                             text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=60, help="simulated seconds (ticks)")
    ap.add_argument("--warmup", type=int, default=10, help="ticks not recorded (filter windows fill, JIT)")
    ap.add_argument("--cold", action="store_true", help="also measure first-tick latency in fresh processes")
    a = ap.parse_args()
    con = Console(width=160)
    site = big_site()
    keys = demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons])
    sim = Simulator(site, keys, seed=1, start_ts=1_700_000_000.0)
    obs = sim.advance(sim.start_ts + a.seconds)
    engines = {True: Timed(BandPipeline(site, keys, node="bench"), True),
               False: Timed(BandPipeline(site, keys, node="bench"), False)}
    load0 = os.getloadavg()[0]
    i = 0
    for s in range(1, a.seconds + 1):
        now = sim.start_ts + s
        while i < len(obs) and obs[i].ts < now:
            o = obs[i]
            for e in engines.values():
                e.pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
            i += 1
        order = (True, False) if s % 2 else (False, True)
        for compiled in order:
            engines[compiled].tick(now, s > a.warmup, compiled)
    load1 = os.getloadavg()[0]
    con.print(f"machine: {platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}; "
              f"{len(obs)} observations, {a.seconds - a.warmup} ticks timed per engine; "
              f"load average {load0:.2f} -> {load1:.2f}")
    tab = Table(title="1 Hz tick, 500 bands × 16 receivers: median CPU ms of the thread (p10–p90)")
    tab.add_column("stage")
    for c in ("numpy reference (baseline)", "compiled kernels", "ratio (median)"):
        tab.add_column(c)
    for st in STAGES:
        ref, new = (np.array(engines[c].t[st]) * 1000 for c in (False, True))
        tab.add_row(st, f"{np.median(ref):.2f} ({np.percentile(ref, 10):.2f}–{np.percentile(ref, 90):.2f})",
                    f"{np.median(new):.2f} ({np.percentile(new, 10):.2f}–{np.percentile(new, 90):.2f})",
                    f"{np.median(ref) / max(np.median(new), 1e-9):.1f}×")
    ref_w, new_w = (np.array(engines[c].wall) * 1000 for c in (False, True))
    tab.add_row("tick, wall clock", f"{np.median(ref_w):.2f} ({np.percentile(ref_w, 10):.2f}–"
                f"{np.percentile(ref_w, 90):.2f})", f"{np.median(new_w):.2f} ({np.percentile(new_w, 10):.2f}–"
                f"{np.percentile(new_w, 90):.2f})", f"{np.median(ref_w) / max(np.median(new_w), 1e-9):.1f}×")
    ref_t, new_t = (float(np.mean(engines[c].t["tick"])) for c in (False, True))
    tab.add_row("1 h of ticks (mean CPU × 3600)", f"{ref_t * 3600:.0f} s", f"{new_t * 3600:.1f} s", "")
    con.print(tab)
    d = [np.abs(p - q).max(initial=0.0) for p, q in zip(engines[True].xy, engines[False].xy, strict=True)]
    con.print(f"positions, compiled vs numpy, every fix of every tick: max |Δ| {max(d):.3g} m")
    if a.cold:
        cold = Table(title="fresh process, wall s (CPU s): the kernels compile or load while the pipeline is built")
        cold.add_column("mode")
        for c in COLD_PHASES:
            cold.add_column(c)
        for mode, label in (("empty", "compiled, empty kernel cache"), ("warm", "compiled, warm kernel cache"),
                            ("numpy", "numpy reference")):
            r = cold_start(mode)
            cold.add_row(label, *(f"{r[c][0]:.3f} ({r[c][1]:.3f})" for c in COLD_PHASES))
        con.print(cold)


if __name__ == "__main__":
    main()
