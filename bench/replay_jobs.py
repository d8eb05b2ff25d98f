"""`qwatch-edge replay` of a 500-band site log: wall and CPU with one and two processes, output compared.

Each tree's kernels are compiled (one untimed replay of the log's first 20,000 lines) before the
timed runs. Each run is the real CLI in a child process (`python -m edge.cli replay … --jobs J`), timed from the
spawn to its exit: wall time, CPU time (user + sys of the replay and its front process, from the
children's rusage) and peak RSS of the largest process. Every run's stdout (the alerts) and stderr
(bad lines, summary) are compared byte for byte with the first run's. `--impl NAME=ROOT` adds
another source tree (run with one process: `--jobs` is new), e.g. the code before a change.

Without `--log` the bench simulates `--seconds` of the 500-band site of the speed benchmarks
(edge.sim.sites.blocks_site) first.

Usage: .venv/bin/python -m bench.replay_jobs [--seconds 120] [--log FILE --site SITE --keys KEYS]
       [--impl base=/path/to/tree] [--jobs 1,2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.bands_advert_path import write_inputs

ROOT = Path(__file__).resolve().parent.parent


def run_cli(root: Path, site: Path, keys: Path, log: Path, jobs: int | None, out: Path) -> dict[str, Any]:
    """One replay; its times, peak RSS and the digests of its stdout and stderr."""
    cmd = [sys.executable, "-m", "edge.cli", "replay", "--config", str(site), "--keys", str(keys), str(log)]
    if jobs is not None:
        cmd[4:4] = ["--jobs", str(jobs)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with (out.with_suffix(".out")).open("wb") as so, (out.with_suffix(".err")).open("wb") as se:
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=so, stderr=se, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.with_suffix('.err').read_text()[-2000:]}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "rss_mb": after.ru_maxrss / 1024.0,
            "stdout": hashlib.sha256(out.with_suffix(".out").read_bytes()).hexdigest(),
            "stderr": hashlib.sha256(out.with_suffix(".err").read_bytes()).hexdigest(),
            "alerts": len(out.with_suffix(".out").read_bytes().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--site", type=Path)
    ap.add_argument("--keys", type=Path)
    ap.add_argument("--jobs", default="1,2", help="comma-separated --jobs values for the current tree")
    ap.add_argument("--impl", action="append", default=[], metavar="NAME=ROOT")
    a = ap.parse_args()
    con = Console(width=160)
    runs: list[tuple[str, Path, int | None]] = [("current", ROOT, int(j)) for j in a.jobs.split(",")]
    runs += [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve(), None) for s in a.impl]
    with tempfile.TemporaryDirectory(prefix="qwatch_replay_jobs_") as tmp:
        work = Path(tmp)
        if a.log is not None:
            if a.site is None or a.keys is None:
                raise SystemExit("--log needs --site and --keys")
            site, keys, log = a.site.resolve(), a.keys.resolve(), a.log.resolve()
        else:
            site, keys, log = write_inputs(a.seconds, work)
        lines = sum(1 for _ in log.open("rb"))
        # Each tree's compiled kernels into its cache first (numba keys the cache by source path),
        # so no timed run pays for compiling: a replay of the log's first 20,000 lines, not timed.
        head = work / "head.jsonl"
        with log.open("rb") as src, head.open("wb") as dst:
            for _, line in zip(range(20_000), src, strict=False):
                dst.write(line)
        for root in dict.fromkeys(r for _, r, _ in runs):
            run_cli(root, site, keys, head, None, work / "warm")
        load = [os.getloadavg()[0]]
        results = []
        for i, (name, root, jobs) in enumerate(runs):
            results.append((name, jobs, run_cli(root, site, keys, log, jobs, work / f"run{i}")))
            load.append(os.getloadavg()[0])
    ref = results[0][2]
    tab = Table(title=f"qwatch-edge replay of {log.name}: {lines:,} lines")
    for c in ("implementation", "--jobs", "wall s", "CPU s (user+sys, all processes)", "lines/s wall",
              "peak RSS MB (largest process)", "alerts", "stdout = first run", "stderr = first run"):
        tab.add_column(c)
    for name, jobs, r in results:
        tab.add_row(name, "-" if jobs is None else str(jobs), f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}",
                    f"{lines / r['wall_s']:,.0f}", f"{r['rss_mb']:.0f}", str(r["alerts"]),
                    "yes" if r["stdout"] == ref["stdout"] else "NO", "yes" if r["stderr"] == ref["stderr"] else "NO")
    con.print(tab)
    con.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
              f"load average {min(load):.1f}-{max(load):.1f}; target: 1 h of the 500-band site in <= 30 s wall")


if __name__ == "__main__":
    main()
