"""The live node: the real `qwatch-edge run` for minutes on a 500-band site with 4 cameras and a real broker.

What runs: Mosquitto (a child process on a loopback port); `python -m edge.cli run` on a generated
500-band site (demo geometry and receivers, sim sources at 1 advert/s per band) plus 4 cameras whose
URL is one synthetic clip file (devtools.video_synth, a person crossing the fence, looped at its own
rate, detect 320×180 at 5 fps), outbox and MQTT link to the broker. Sampled from /proc every
`--sample-s`: the agent's CPU (user + sys, all its threads; 100 % = one core) and RSS. From its node
telemetry (read from the broker): tick time p50 / p99 / max over its last 1,500 ticks, the longest tick
lag, dropped observations and the cameras' processed frame rate.

Reported: CPU over the run after `--warmup-s`, RSS at the end, RSS growth (least-squares slope after
the warm-up, MB per 10 minutes), tick times. `--impl NAME=ROOT` runs another tree the same way after
this one (e.g. the code before a change; its tick times are shown only if it reports them).

`--profile threads` (current tree only) runs the agent under `bench.agent_profile` instead: the same CLI
in-process, plus its CPU by thread (/proc/self/task) and by stage (the thread's CPU clock around the
pipeline's, the cameras' and the telemetry's methods), printed as tables after the run; `--profile
cprofile` adds a cProfile of every thread (slows Python-heavy code about 2.5x: read its shares only).

Usage: .venv/bin/python -m bench.edge_live_node [--minutes 10] [--cameras 4] [--impl base=/path/to/tree]
       [--profile threads|cprofile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from bench.edge_site_gen import big_site
from devtools import video_synth as synth
from devtools.services import start_mosquitto
from tests.faults.edge_harness import TopicRecorder, last_node_telemetry

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def add_cameras(site_path: Path, clip: Path, n: int) -> None:
    """Append `n` cameras reading `clip` (the synthetic scene's zone and mask) to the site file."""
    doc = yaml.safe_load(site_path.read_text())
    doc["cameras"] = [{
        "id": f"cam-{i + 1}", "url": str(clip), "detect": {"width": 320, "height": 180, "fps": 5},
        "masks": [[list(p) for p in synth.MASK_TOP]],
        "zones": [{"id": "fence-north", "polygon": [list(p) for p in synth.FENCE_ZONE], "min_area": synth.ZONE_MIN_AREA,
                   "dwell_frames": synth.ZONE_DWELL, "alert": True}],
    } for i in range(n)]
    site_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds user + sys, RSS MB) of a process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = 0.0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return cpu, rss


def slope_per_10min(t: list[float], y: list[float]) -> float:
    if len(t) < 3:
        return float("nan")
    mt, my = statistics.fmean(t), statistics.fmean(y)
    den = sum((a - mt) ** 2 for a in t)
    return 600.0 * sum((a - mt) * (b - my) for a, b in zip(t, y, strict=True)) / den if den else float("nan")


def run_node(root: Path, name: str, site: Path, keys: Path, broker: str, work: Path, a: argparse.Namespace,
             con: Console) -> dict[str, Any]:
    node = f"live-{name}"
    rec = TopicRecorder(broker, topic=f"qwatch/v1/+/{node}/telemetry/node", client_id=f"bench-{node}")
    cache = Path(tempfile.gettempdir()) / f"qwatch-live-bench-cache-{name}"
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(cache)}
    module = "edge.cli"
    prof_out = work / f"{node}-profile.json"
    if a.profile and name == "current":
        module = "bench.agent_profile"  # the same CLI in-process, under the profiler (bench/agent_profile.py)
        env.update({"QWATCH_PROFILE_OUT": str(prof_out), "QWATCH_PROFILE_AFTER_S": str(a.warmup_s),
                    "QWATCH_PROFILE_CPROFILE": "1" if a.profile == "cprofile" else "0"})
    cmd = [sys.executable, "-m", module, "run", "--config", str(site), "--keys", str(keys), "--node", node,
           "--broker", broker, "--data-dir", str(work / node), "--node-telemetry-s", "5", "--log-level", "WARNING"]
    # As after an install: the tree's own kernel preparation (its `make venv` / `qwatch-edge install` step:
    # the AOT build where the tree has one, else the JIT warm-up), then one untimed start. Without the first,
    # a tree checked out afresh compiles in the timed run (its 5 s start cannot finish compiling under load).
    if (root / "edge" / "bands" / "kernel_aot.py").is_file():
        code, aot_env = "from edge.bands.kernel_aot import prepare; print(*prepare())", {"QWATCH_KERNELS": "jit"}
    else:
        code, aot_env = "from edge.bands.kernel_warmup import warm_up; print(False, warm_up())", {}
    prep = subprocess.run([sys.executable, "-c", code], cwd=root, env={**env, **aot_env}, capture_output=True,
                          text=True, check=False, timeout=900)
    kernels = "aot" if prep.stdout.startswith("True") else "jit"
    quiet = {**env, "QWATCH_PROFILE_OUT": os.devnull}
    subprocess.run([*cmd, "--duration", "5", "--no-cameras"], cwd=root, env=quiet, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False, timeout=600)
    log = (work / f"{node}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    samples: list[tuple[float, float, float]] = []
    load = [os.getloadavg()[0]]
    try:
        end = t0 + 60.0 * a.minutes
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(a.sample_s)
            cpu, rss = proc_sample(proc.pid)
            samples.append((time.monotonic() - t0, cpu, rss))
            load.append(os.getloadavg()[0])
            if len(samples) % max(1, round(60 / a.sample_s)) == 0:
                con.print(f"{name}: {samples[-1][0] / 60:.0f} min, RSS {rss:.0f} MB")
        tel = last_node_telemetry(rec, node) or {}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        rec.close()
    if not samples:
        raise SystemExit(f"{name}: the agent ended at once; see {work / f'{node}.log'}")
    after = [s for s in samples if s[0] >= a.warmup_s]
    first, last = after[0], after[-1]
    agent = tel.get("watchdogs", {}).get("agent", {})
    cams = tel.get("cameras", {})
    rates = tel.get("adverts_per_s", {})
    return {
        "cpu_pct": 100.0 * (last[1] - first[1]) / max(last[0] - first[0], 1e-9),
        "rss_end": last[2], "rss_max": max(s[2] for s in after), "rss_first": first[2],
        "growth_mb_10min": slope_per_10min([s[0] for s in after], [s[2] for s in after]),
        "minutes": last[0] / 60.0, "tick": {k: agent.get(k) for k in ("tick_ms_p50", "tick_ms_p99", "tick_ms_max",
                                                                         "tick_n")},
        "tick_lag_max_ms": agent.get("tick_lag_max_ms"), "obs_dropped": agent.get("obs_dropped"),
        "fps_proc": [round(c.get("fps_proc", 0.0), 1) for c in cams.values()],
        "accepted_per_s": rates.get("accepted"), "duplicate_per_s": rates.get("duplicate"),
        "load": (min(load), max(load)), "kernels": kernels,
        "profile": json.loads(prof_out.read_text()) if prof_out.is_file() else None,
    }


def print_profile(con: Console, name: str, prof: dict[str, Any]) -> None:
    """Per-thread CPU (% of one core over the measured wall time) and, with cProfile, the agent thread's stages."""
    cpu = prof["cpu"]
    wall = max(cpu["wall_s"], 1e-9)
    tab = Table(title=f"{name}: CPU by thread over {wall:.0f} s after the warm-up "
                      f"(process {100 * cpu['process_cpu_s'] / wall:.1f} % of one core)")
    for c in ("thread", "CPU s", "% of one core"):
        tab.add_column(c)
    for thread, sec in cpu["threads_cpu_s"].items():
        tab.add_row(thread, f"{sec:.1f}", f"{100 * sec / wall:.2f}")
    con.print(tab)
    tab = Table(title=f"{name}: CPU by stage (thread CPU clock around each stage's method; exclusive of nested "
                      "stages; the rest of each thread by difference)")
    for c in ("stage", "CPU s", "% of one core"):
        tab.add_column(c)
    for stage, sec in prof["stages"].items():
        tab.add_row(stage, f"{sec:.1f}", f"{100 * sec / wall:.2f}")
    con.print(tab)
    cprof = prof.get("cprofile") or {}
    main_thread = cprof.get("MainThread")
    if main_thread:
        total = max(main_thread["total_s"], 1e-9)
        agent_cpu = cpu["threads_cpu_s"].get("MainThread", 0.0)
        tab = Table(title="agent thread by stage (cProfile on the thread's CPU clock; the share scaled to the "
                          "thread's measured CPU)")
        for c in ("stage", "profiled CPU s", "share", "≈ % of one core"):
            tab.add_column(c)
        for stage, sec in main_thread["stages"].items():
            share = sec / total
            tab.add_row(stage, f"{sec:.1f}", f"{100 * share:.1f} %", f"{100 * agent_cpu * share / wall:.2f}")
        con.print(tab)
    for thread, data in cprof.items():
        con.print(f"[bold]{thread}[/]: profiled {data['total_s']:.1f} CPU s; top by own time:")
        for row in data["top_tottime"][:12]:
            con.print(f"  {row['tottime_s']:7.2f} {row['cumtime_s']:7.2f} {row['calls']:>9} {row['func']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--bands", type=int, default=500)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--impl", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--profile", choices=("threads", "cprofile"), default=None,
                    help="current only: CPU by thread (threads), and by stage too (cprofile, which slows Python down)")
    a = ap.parse_args()
    con = Console(width=170)
    impls = [("current", ROOT)] + [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in a.impl]
    results: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="qwatch_live_") as tmp:
        work = Path(tmp)
        site, keys = big_site(work / "site", a.bands)
        if a.cameras:
            clip = work / "crossing.mp4"
            synth.encode(synth.SceneSpec("crossing", seconds=30.0, event_at=8.0, event_len=10.0), clip)
            add_cameras(site, clip, a.cameras)
        mq = start_mosquitto(work / "mosquitto")
        try:
            for name, root in impls:
                results.append((name, run_node(root, name, site, keys, mq.address, work, a, con)))
        finally:
            mq.stop()
    tab = Table(title=f"`qwatch-edge run`: {a.bands} sim bands, {a.cameras} cameras from a file, Mosquitto; "
                      f"{a.minutes:g} min, figures after the first {a.warmup_s:.0f} s")
    for c in ("implementation", "kernels", "CPU % of one core", "RSS MB end (max)", "RSS growth MB / 10 min",
              "tick ms p50", "tick ms p99", "tick ms max", "tick lag max ms", "obs dropped", "camera fps processed",
              "adverts/s accepted + duplicate", "load average"):
        tab.add_column(c)
    for name, r in results:
        t = r["tick"]
        tab.add_row(name, r["kernels"], f"{r['cpu_pct']:.1f}", f"{r['rss_end']:.0f} ({r['rss_max']:.0f})",
                    f"{r['growth_mb_10min']:+.1f}", str(t["tick_ms_p50"]), str(t["tick_ms_p99"]),
                    str(t["tick_ms_max"]), str(r["tick_lag_max_ms"]), str(r["obs_dropped"]),
                    ", ".join(map(str, r["fps_proc"])) or "-",
                    f"{r['accepted_per_s']} + {r['duplicate_per_s']}", f"{r['load'][0]:.1f}-{r['load'][1]:.1f}")
    con.print(tab)
    con.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
              "targets: <= 15 % of one core, RSS < 200 MB, no growth")
    for name, r in results:
        if r["profile"] is not None:
            print_profile(con, name, r["profile"])
    con.print(json.dumps({name: {k: v for k, v in r.items() if k != "profile"} for name, r in results}, default=str))


if __name__ == "__main__":
    main()
