"""The per-advert path on one core, against the bare cost of one AES-CMAC, in the same process.

What is timed (CPU time of one process, ticks excluded): an observation log of the 500-band site
through `edge.replay.run_replay` — block parsing, receiver look-up, duplicate table, decode,
AES-CMAC, counter (anti-replay) rules, per-advert rules (tamper, SOS, battery, motion, fever) and the
tracker's sample writes. The pipeline's 1 Hz tick is replaced by a no-op: it is per second, not per
advert, and has its own benchmark (`bench.bands_tick`).

The floor, in the same process right before each round: the `cryptography` AES-128-CMAC of each
distinct advert of the log (company ID + 14-byte body, truncated to 8 bytes), (a) from a context
keyed once per band and copied per advert (what an honest verifier can do at best with
`cryptography`), (b) keyed afresh per advert. The ratio is path µs per line / floor (a) µs.

Each implementation runs in its own child process (`--impl NAME=ROOT` adds another source tree,
e.g. a copy of the code before a change); rounds alternate between implementations so load
changes hit both alike.

Usage: .venv/bin/python -m bench.bands_advert_path [--seconds 120] [--rounds 3] [--log FILE]
       [--impl base=/path/to/other/tree]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent

# Runs inside the child with the implementation's tree first on sys.path; only uses APIs every
# version of the tree has (BandPipeline, run_replay, the site and key loaders).
_CHILD = r'''
import gc, hmac, io, json, sys, time
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from edge.bands.pipeline import BandPipeline
from edge.replay import run_replay
from protocols.site_config import load_band_keys, load_site_config

site_path, keys_path, log_path = sys.argv[1:4]
site = load_site_config(site_path)
keys = load_band_keys(keys_path)
text = open(log_path, encoding="utf-8").read()
# The distinct adverts of the log, for the floor: (band key, message, tag).
seen = {}
for line in text.splitlines():
    d = line[line.rfind('"data": "') + 9:-2]
    if d not in seen:
        raw = bytes.fromhex(d)
        seen[d] = (keys[int.from_bytes(raw[1:5], "little")], site.company_id.to_bytes(2, "little") + raw[:14],
                   raw[14:])
adverts = list(seen.values())
ctx = {k: CMAC(algorithms.AES128(k)) for k, _, _ in adverts}
gc.collect()
gc.freeze()
t0 = time.process_time()
for k, msg, tag in adverts:
    mac = ctx[k].copy()
    mac.update(msg)
    assert hmac.compare_digest(mac.finalize()[:8], tag)
floor_copy = time.process_time() - t0
t0 = time.process_time()
for k, msg, tag in adverts:
    mac = CMAC(algorithms.AES128(k))
    mac.update(msg)
    assert hmac.compare_digest(mac.finalize()[:8], tag)
floor_fresh = time.process_time() - t0
gc.unfreeze()
pipe = BandPipeline(site, keys, node="bench")
pipe.tick = lambda now: []
t0 = time.process_time()
res = run_replay(pipe, io.StringIO(text), lambda a: None)
path = time.process_time() - t0
counters = pipe.counters()
print(json.dumps({"lines": res.lines, "distinct": len(adverts), "accepted": counters.get("accepted", 0),
                  "floor_copy_s": floor_copy, "floor_fresh_s": floor_fresh, "path_s": path}))
'''


def write_inputs(seconds: float, out: Path) -> tuple[Path, Path, Path]:
    """The 500-band site, its demo keys and `seconds` of simulated log, as files."""
    import yaml

    from edge.sim import Simulator
    from edge.sim.keys import site_demo_keys
    from edge.sim.obslog import write_log
    from edge.sim.sites import blocks_site
    from protocols.site_config import write_band_keys

    site = blocks_site(500)
    keys = site_demo_keys(site)
    site_path, keys_path, log_path = out / "site.yaml", out / "keys.json", out / "log.jsonl"
    site_path.write_text(yaml.safe_dump(site.model_dump(mode="json", by_alias=True, exclude_none=True),
                                        sort_keys=False), encoding="utf-8")
    write_band_keys(keys_path, keys)
    sim = Simulator(site, keys, seed=7, start_ts=1_700_000_000.0)
    with log_path.open("w", encoding="utf-8") as fh:
        write_log(sim, fh, seconds)
    return site_path, keys_path, log_path


def run_child(root: Path, site: Path, keys: Path, log: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(site), str(keys), str(log)], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child for {root} failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="simulated seconds of the 500-band site")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--log", type=Path, help="use this log (with --site and --keys) instead of simulating")
    ap.add_argument("--site", type=Path)
    ap.add_argument("--keys", type=Path)
    ap.add_argument("--impl", action="append", default=[], metavar="NAME=ROOT", help="another source tree")
    a = ap.parse_args()
    con = Console(width=170)
    impls = [("current", ROOT)] + [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in a.impl]
    with tempfile.TemporaryDirectory(prefix="qwatch_advert_path_") as tmp:
        if a.log is not None:
            if a.site is None or a.keys is None:
                raise SystemExit("--log needs --site and --keys")
            site, keys, log = a.site, a.keys, a.log
        else:
            t = time.perf_counter()
            site, keys, log = write_inputs(a.seconds, Path(tmp))
            con.print(f"simulated {a.seconds:.0f} s of the 500-band site in {time.perf_counter() - t:.1f} s")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in impls}
        load = [os.getloadavg()[0]]
        for _ in range(a.rounds):
            for name, root in impls:
                results[name].append(run_child(root, site, keys, log))
                load.append(os.getloadavg()[0])
    first = next(iter(results.values()))[0]
    tab = Table(title=f"per-advert path, one core, CPU time, ticks excluded: {first['lines']:,} lines, "
                      f"{first['distinct']:,} distinct adverts; median of {a.rounds} rounds (min-max)")
    for c in ("implementation", "lines/s per core", "µs per line", "µs per accepted advert",
              "CMAC floor µs/advert (keyed once, copied)", "CMAC keyed per advert µs", "path per line / floor"):
        tab.add_column(c)

    def cell(xs: list[float], fmt: str) -> str:
        return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})"

    for name, rs in results.items():
        per_line = [1e6 * r["path_s"] / r["lines"] for r in rs]
        floor = [1e6 * r["floor_copy_s"] / r["distinct"] for r in rs]
        tab.add_row(name, cell([r["lines"] / r["path_s"] for r in rs], ",.0f"), cell(per_line, ".2f"),
                    cell([1e6 * r["path_s"] / max(r["accepted"], 1) for r in rs], ".2f"), cell(floor, ".3f"),
                    cell([1e6 * r["floor_fresh_s"] / r["distinct"] for r in rs], ".3f"),
                    cell([p / f for p, f in zip(per_line, floor, strict=True)], ".1f"))
    con.print(tab)
    con.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
              f"load average during the rounds {min(load):.1f}-{max(load):.1f}; target >= 100,000 lines/s per core")


if __name__ == "__main__":
    main()
