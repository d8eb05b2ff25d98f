"""Cold start: from `qwatch-edge run` to the node's first tick, with a cold and a warm kernel cache.

Two measurements, each with a fresh, empty `NUMBA_CACHE_DIR` (cold: every compiled kernel is built),
then with the cache that run left behind (warm: the kernels are loaded from the JIT's cache), then,
for a tree that has `edge/bands/kernel_aot.py`, after its install-time `prepare()` in that cache
(installed: the kernels run from the module built ahead of time, without numba):

1. The agent: `python -m edge.cli run` on a generated 500-band site (demo geometry, sim receivers,
   no cameras, no broker needed), timed from the spawn to its `event=first_tick` log line; the
   `event=kernels_ready seconds=…` line says how much of it was the kernels.
2. The pipeline alone, in a child process that works on any version of the tree (`--impl`): imports,
   `BandPipeline(...)` (which prepares the kernels), 3 s of simulated adverts, then the first tick,
   each timed. With `--impl base=ROOT` the same runs for another tree (e.g. the code before a change).

Usage: .venv/bin/python -m bench.edge_cold_start [--runs 2] [--impl base=/path/to/tree]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.edge_site_gen import big_site

ROOT = Path(__file__).resolve().parent.parent

_PIPELINE_CHILD = r'''
import json, time
t0 = time.perf_counter()
import numpy as np
from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.keys import demo_keys
from edge.sim.sites import blocks_site
t_import = time.perf_counter() - t0
site = blocks_site(500)
keys = demo_keys([b.id for b in site.bands] + [b.id for b in site.beacons])
obs = Simulator(site, keys, seed=1, start_ts=1_700_000_000.0).advance(1_700_000_003.0)
t0 = time.perf_counter()
pipe = BandPipeline(site, keys, node="cold")
t_build = time.perf_counter() - t0
for o in obs:
    pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
t0 = time.perf_counter()
pipe.tick(np.floor(obs[-1].ts) + 1.0)
t_tick = time.perf_counter() - t0
import resource, sys
print(json.dumps({"import_s": t_import, "build_s": t_build, "first_tick_s": t_tick, "numba": "numba" in sys.modules,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
'''


def prepare_tree(root: Path, cache: Path) -> bool:
    """The tree's install-time kernel preparation into `cache` (the AOT build); whether it has one and it worked."""
    if not (root / "edge" / "bands" / "kernel_aot.py").is_file():
        return False
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(root), "QWATCH_KERNELS": "jit"}
    proc = subprocess.run([sys.executable, "-c", "from edge.bands.kernel_aot import prepare; print(*prepare())"],
                          cwd=root, env=env, capture_output=True, text=True, check=False, timeout=900)
    return proc.stdout.startswith("True")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def agent_first_tick(site: Path, keys: Path, cache: Path, work: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """Spawn the agent; seconds from the spawn to its first tick, the kernels' share and its RSS then."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edge.cli", "run", "--config", str(site), "--keys", str(keys), "--node", "cold",
           "--broker", "127.0.0.1:1", "--data-dir", str(work / "data"), "--no-cameras", "--log-level", "INFO"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: dict[str, Any] = {}
    done = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"event=kernels_ready seconds=([0-9.]+)", line)
            if m:
                found["kernels_s"] = float(m.group(1))
            if "event=first_tick" in line:
                found["first_tick_s"] = time.perf_counter() - t0
                found["rss_mb"] = rss_mb(proc.pid)
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done.wait(timeout_s)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
    if "first_tick_s" not in found:
        raise SystemExit("the agent ended or timed out before its first tick")
    return found


def pipeline_first_tick(root: Path, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PIPELINE_CHILD], cwd=root, env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline child for {root} failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="warm runs after each cold one")
    ap.add_argument("--impl", action="append", default=[], metavar="NAME=ROOT", help="another tree (pipeline only)")
    a = ap.parse_args()
    con = Console(width=160)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="qwatch_cold_") as tmp:
        work = Path(tmp)
        site, keys = big_site(work / "site", 500)
        agent_rows: list[tuple[str, dict[str, Any]]] = []
        cache = work / "agent-cache"
        agent_rows.append(("cold", agent_first_tick(site, keys, cache, work)))
        for i in range(a.runs):
            agent_rows.append((f"warm {i + 1}", agent_first_tick(site, keys, cache, work)))
        if prepare_tree(ROOT, cache):
            for i in range(a.runs):
                agent_rows.append((f"installed (AOT) {i + 1}", agent_first_tick(site, keys, cache, work)))
        load.append(os.getloadavg()[0])
        impls = [("current", ROOT)] + [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in a.impl]
        pipe_rows: list[tuple[str, str, dict[str, Any]]] = []
        for name, root in impls:
            cache = work / f"pipe-cache-{name}"
            pipe_rows.append((name, "cold", pipeline_first_tick(root, cache)))
            for i in range(a.runs):
                pipe_rows.append((name, f"warm {i + 1}", pipeline_first_tick(root, cache)))
            if prepare_tree(root, cache):
                for i in range(a.runs):
                    pipe_rows.append((name, f"installed (AOT) {i + 1}", pipeline_first_tick(root, cache)))
            load.append(os.getloadavg()[0])
    t1 = Table(title="`qwatch-edge run`, 500 bands (sim receivers, no cameras): spawn → first tick, wall s")
    for c in ("kernel cache", "spawn → first tick", "of which kernels ready (compile or load)", "RSS MB at first tick"):
        t1.add_column(c)
    for label, r in agent_rows:
        t1.add_row(label, f"{r['first_tick_s']:.2f}", f"{r.get('kernels_s', float('nan')):.2f}",
                   f"{r.get('rss_mb', float('nan')):.0f}")
    con.print(t1)
    t2 = Table(title="the pipeline alone (500-band blocks site), wall s")
    for c in ("implementation", "kernel cache", "imports", "BandPipeline(...)", "first tick", "whole process",
              "numba loaded", "peak RSS MB"):
        t2.add_column(c)
    for name, label, r in pipe_rows:
        t2.add_row(name, label, f"{r['import_s']:.2f}", f"{r['build_s']:.2f}", f"{r['first_tick_s']:.2f}",
                   f"{r['process_s']:.2f}", "yes" if r.get("numba", True) else "no", f"{r['peak_rss_mb']:.0f}")
    con.print(t2)
    con.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
              f"load average {min(load):.1f}-{max(load):.1f}")


if __name__ == "__main__":
    main()
