"""The window breach test's kernel on a replayed 500-band log: CPU per tick, and the same numbers bit for bit.

Each implementation (this tree, and `--impl NAME=ROOT` trees) runs in its own child process: it replays
the first `--lines` lines of the log through `BandPipeline` (as `qwatch-edge replay` does), records
every call of the window test (`window_test.run_test`: its inputs, copied, and its results), then
times those same calls again `--rounds` times (CPU time of the process, the least of the rounds) and
hashes every result array. Equal hashes = the implementations computed the same numbers bit for bit
on the same inputs. The inputs come from each tree's own replay, so the hashes also show that the
replays saw the same inputs.

Usage: .venv/bin/python -m bench.window_kernel --log LOG --site SITE --keys KEYS [--lines 240000]
       [--rounds 3] [--impl base=/path/to/tree] [--jit-too]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import copy, hashlib, json, sys, time
from pathlib import Path
import numpy as np
import edge.bands.window_detector as wd
import edge.bands.window_test as wt
from edge.bands.pipeline import BandPipeline
from edge.replay import run_replay
from protocols.site_config import load_band_keys, load_site_config

site, keys, log, n, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
pipe = BandPipeline(load_site_config(Path(site)), load_band_keys(Path(keys)), node="replay")
calls = []
orig = wt.run_test

def rec(c, x, inside_only=False, **kw):  # kw: `decide` (the thresholds) since the settled-from-bounds change
    x0, kw0 = copy.deepcopy(x), copy.deepcopy(kw)  # the detector may change its arrays in place after the call
    r = orig(c, x, inside_only, **kw)
    calls.append((x0, inside_only, kw0, r))
    return r

wd.run_test = rec
ticks = [0]
tick = pipe.tick

def counted(now):
    ticks[0] += 1
    return tick(now)

pipe.tick = counted
with open(log, encoding="utf-8") as fh:
    run_replay(pipe, (line for _, line in zip(range(n), fh)), lambda a: None)
cand = pipe.detector.cand
best = float("inf")
digest = hashlib.sha256()
for k in range(rounds):
    t0 = time.process_time()
    out = [orig(cand, x, io, **kw) for x, io, kw, _ in calls]
    best = min(best, time.process_time() - t0)
for (x, io, _, r), r2 in zip(calls, out):
    for f in ("lr", "out_xy", "out_m", "in_xy", "b_mean", "b_var", "ll_in"):
        a = np.ascontiguousarray(getattr(r2, f))
        digest.update(a.tobytes())
        assert np.array_equal(a, getattr(r, f), equal_nan=True), "a re-run differs from the replay's own call"
rows = sum(len(x.sets) for x, _, _, _ in calls)
print(json.dumps({"ticks": ticks[0], "calls": len(calls), "rows": rows, "cpu_s": best, "digest": digest.hexdigest()}))
"""


def run_child(root: Path, a: argparse.Namespace, extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root), **(extra or {})}
    args = [str(a.site.resolve()), str(a.keys.resolve()), str(a.log.resolve()), str(a.lines), str(a.rounds)]
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=root, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child for {root} failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--site", type=Path, required=True)
    ap.add_argument("--keys", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=240_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--impl", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--jit-too", action="store_true",
                    help="also run this tree on the numba JIT (QWATCH_KERNELS=jit; by default it uses the module "
                         "built ahead of time when there is one): the same inputs, so the results must be equal")
    a = ap.parse_args()
    impls = [("current", ROOT)] + [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in a.impl]
    load = [os.getloadavg()[0]]
    res = []
    for name, root in impls:
        res.append((name, run_child(root, a)))
        load.append(os.getloadavg()[0])
    if a.jit_too:
        res.append(("current (JIT)", run_child(ROOT, a, {"QWATCH_KERNELS": "jit"})))
        load.append(os.getloadavg()[0])
    ref = res[0][1]
    tab = Table(title=f"window test kernel on the first {a.lines:,} lines of {a.log.name}")
    for c in ("implementation", "ticks", "calls", "rows (band windows)", "kernel CPU s (least of rounds)",
              "ms per tick", "µs per row", "ratio to current", "results = current (bit for bit)"):
        tab.add_column(c)
    for name, r in res:
        tab.add_row(name, str(r["ticks"]), str(r["calls"]), f"{r['rows']:,}", f"{r['cpu_s']:.2f}",
                    f"{1e3 * r['cpu_s'] / max(r['ticks'], 1):.1f}", f"{1e6 * r['cpu_s'] / max(r['rows'], 1):.0f}",
                    f"{r['cpu_s'] / ref['cpu_s']:.2f}", "yes" if r["digest"] == ref["digest"] else "NO")
    Console(width=160).print(tab)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"load average {min(load):.1f}-{max(load):.1f}; CPU time of each child process")


if __name__ == "__main__":
    main()
