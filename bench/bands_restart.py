"""A node restart (power cut): the detector restarted cold vs restored from its learned state (edge/learned_state.py).

Per layout × radio model × seed, one simulated site (walkers, a third of the bands standing 0.5-3 m inside a
fence) runs `--before` minutes through one pipeline; its learned state is then written and read back through
the real file (`learned-state.json`, atomically, checked like the agent checks it). From that moment the same
simulated world feeds three pipelines for `--after` minutes:

* **no restart**: the first pipeline, going on (what a node that never lost power would do);
* **cold**: a fresh pipeline (what a restart did before the learned state was kept);
* **restored**: a fresh pipeline that starts from the file, as the agent does: without the rules' start-up margin
  (+3 on the threshold for 90 s, fading over 60 s: it stands in for what is being learned;
  `learned_state.drop_startup_margin`, the default since session 18);
* **restored, start-up margin kept**: the same with the margin put back (what a restore did before).

Escapes (walk out and keep walking, or stand / wander 20-35 m out; over the fence or through the gate) cross
between 30 s and `--escape-window` s after the restart, when a cold detector is weakest. Measured after the
restart: recall within `breach_dwell_s` + 30 s of the crossing, false breaches of null bands in the first
10 minutes, and how far each pipeline's learners stand, after its first tick, from where the uninterrupted run's
are at the end (φ; each receiver's gain correction, floor, plateau loss and burst dispersion D; the band gains,
shown while the band-gain learner is on: the product's default, or `--learn-band-gains`).

Usage: nice -n 10 .venv/bin/python -m bench.bands_restart [--layouts demo,compound] [--radios default,alt]
       [--sigma 6] [--seeds 1] [--first-seed 1] [--bands 60] [--escapes 10] [--before 20] [--after 10]
       [--learn-band-gains] [--md FILE] [--jobs 1]
       nice -n 10 .venv/bin/python -m bench.bands_restart --save-cost
The runs go one after the other on one core (`--jobs` takes 1 only).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.bands_breach import START, Channel, build_scenario, radio_params
from edge import learned_state as ls
from edge.bands.band_gain import GainParams
from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.escapes import Escape
from edge.sim.keys import site_demo_keys
from edge.sim.sites import blocks_site, layout_site
from protocols.site_config import SiteConfig

STARTS = ("no restart", "cold", "restored", "restored, start-up margin kept")
KINDS = ("walk", "stand")
FALSE_SPAN_S = 600.0
EARLY_S = 150.0  # the start-up margin's whole span: 90 s held + 60 s fading


@dataclass
class Learners:
    """Where a pipeline's learners stand (one moment)."""

    phi: float
    gain_dev: np.ndarray  # per receiver, dB (beacons + bands)
    floor: np.ndarray
    loss: np.ndarray
    disp: np.ndarray
    band_gain: np.ndarray


@dataclass
class Outcome:
    """One start kind of one run."""

    caught: int = 0
    escapes: int = 0
    latencies: list[float] = field(default_factory=list)
    false_10min: int = 0
    false_times: list[float] = field(default_factory=list)  # s after the restart, each false breach of the 10 min
    null_bands: int = 0
    dist: dict[str, float] = field(default_factory=dict)


def learners(pipe: BandPipeline, now: float) -> Learners:
    det = pipe.detector
    assert det is not None
    health = pipe.receivers(now)
    return Learners(float(det.null.scale), np.array([float(health[r]["gain_dev_db"]) for r in pipe.tracker.rx_ids]),
                    det.hearing.floor.copy(), det.loss.value().copy(), det.bursts.value().copy(), det.gains.mean.copy())


def distance(a: Learners, ref: Learners) -> dict[str, float]:
    """Largest absolute difference per learner (band gains: RMS over the bands)."""
    return {"φ": abs(a.phi - ref.phi), "rx gain dB": float(np.abs(a.gain_dev - ref.gain_dev).max()),
            "floor dB": float(np.abs(a.floor - ref.floor).max()), "loss": float(np.abs(a.loss - ref.loss).max()),
            "D": float(np.abs(a.disp - ref.disp).max()),
            "band gain dB rms": float(np.sqrt(np.mean((a.band_gain - ref.band_gain) ** 2)))}


def restored_copy(pipe: BandPipeline, site: SiteConfig, keys: dict[int, bytes], now: float) -> BandPipeline:
    """A fresh pipeline started from `pipe`'s state, through the real file and its checks."""
    with tempfile.TemporaryDirectory() as d:
        keeper = ls.Keeper(Path(d), "bench")
        assert keeper.maybe_save(pipe, now, 0.0, force=True)
        fresh = BandPipeline(site, keys, node="bench")
        _learn_gains(fresh, pipe)
        assert keeper.restore(fresh, now + 1.0, 0.0), keeper.stats()
    return fresh


def keep_startup_margin(pipe: BandPipeline, cold: BandPipeline) -> None:
    """`pipe`'s rules with the start-up margin of `cold` (a fresh pipeline of the same site) put back."""
    for band, rules in pipe.rules.items():
        rules.p = replace(rules.p, window_startup_extra=cold.rules[band].p.window_startup_extra)


def _learn_gains(fresh: BandPipeline, like: BandPipeline) -> None:
    if fresh.detector is not None and like.detector is not None:
        fresh.detector.gains.p = like.detector.gains.p


def run(layout: str, radio: str, sigma: float, seed: int, a: argparse.Namespace) -> dict[str, Outcome]:
    site = layout_site(layout, a.bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    restart_s, after_s = 60.0 * a.before, 60.0 * a.after
    duration = restart_s + after_s
    # Escapes cross 30 s … `--escape-window` s after the restart, when a cold detector is weakest.
    sc, escapes = build_scenario(site, seed, a.escapes, KINDS, duration, site.rules.breach_dwell_s,
                                 earliest=restart_s + 30.0, latest=restart_s + a.escape_window)
    ch = Channel(radio, sigma, 0.15, 2.0)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc, radio=radio_params(site, ch))
    first = BandPipeline(site, keys, node="bench")
    if a.learn_band_gains and first.detector is not None:
        first.detector.gains.p = replace(first.detector.gains.p, learn=True)
    for s in range(1, int(restart_s) + 1):
        for o in sim.advance(START + s):
            first.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
        first.tick(START + s)
    t_r = START + restart_s
    cold = BandPipeline(site, keys, node="bench")
    _learn_gains(cold, first)
    kept = restored_copy(first, site, keys, t_r)
    keep_startup_margin(kept, cold)
    pipes = {"no restart": first, "cold": cold, "restored": restored_copy(first, site, keys, t_r), STARTS[3]: kept}
    raised: dict[str, dict[int, list[float]]] = {k: {} for k in STARTS}
    start_state: dict[str, Learners] = {}
    for s in range(int(restart_s) + 1, int(duration) + 1):
        now = START + s
        obs = sim.advance(now)
        for k, p in pipes.items():
            alerts = [al for o in obs for al in p.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)] + p.tick(now)
            for al in alerts:
                if al.type == "geofence_breach" and al.state == "raised":
                    raised[k].setdefault(int(getattr(al.subject, "band", -1)), []).append(al.ts - START)
            if s == int(restart_s) + 1:
                start_state[k] = learners(p, now)
    end = learners(first, START + duration)
    return {k: score(site, escapes, raised[k], restart_s, distance(start_state[k], end)) for k in STARTS}


def score(site: SiteConfig, escapes: list[Escape], raised: dict[int, list[float]], restart_s: float,
          dist: dict[str, float]) -> Outcome:
    out = Outcome(dist=dist)
    deadline = site.rules.breach_dwell_s + 30.0
    by_band = {e.band: e for e in escapes}
    for b in site.bands:
        e = by_band.get(b.id)
        ts = raised.get(b.id, [])
        end = restart_s + FALSE_SPAN_S if e is None else min(e.cross_at, restart_s + FALSE_SPAN_S)
        false = [t - restart_s for t in ts if restart_s <= t < end]
        out.false_10min += len(false)
        out.false_times += false
        if e is None:
            out.null_bands += 1
            continue
        hits = [t - e.cross_at for t in ts if t >= e.cross_at]
        out.escapes += 1
        if hits and min(hits) <= deadline:
            out.caught += 1
            out.latencies.append(min(hits))
    return out


def table(rows: list[tuple[str, str, float, str, Outcome, int]], band_gains: bool) -> tuple[list[str], list[list[str]]]:
    cols = ["layout", "radio", "σ", "start", "escapes caught ≤ dwell+30 s", "latency p50 s",
            "false breaches, first 10 min (null bands)", f"of them in the first {EARLY_S:.0f} s", "φ off",
            "rx gain off dB", "floor off dB", "loss off",
            "D off"] + (["band gain off dB rms"] if band_gains else [])
    out = []
    for layout, radio, sigma, start, o, seeds in rows:
        lat = f"{np.median(o.latencies):.0f}" if o.latencies else "-"
        d = o.dist
        out.append([layout, radio, f"{sigma:g}", start, f"{o.caught}/{o.escapes}", lat,
                    f"{o.false_10min} ({o.null_bands} bands × {seeds} runs)" if seeds > 1 else
                    f"{o.false_10min} ({o.null_bands} bands)",
                    str(sum(1 for t in o.false_times if t < EARLY_S)),
                    f"{d['φ']:.2f}", f"{d['rx gain dB']:.1f}", f"{d['floor dB']:.1f}", f"{d['loss']:.2f}",
                    f"{d['D']:.2f}"] + ([f"{d['band gain dB rms']:.2f}"] if band_gains else []))
    return cols, out


def merge(parts: list[Outcome]) -> Outcome:
    """Counts summed over seeds; learner distances: the largest over them."""
    o = Outcome()
    for p in parts:
        o.caught += p.caught
        o.escapes += p.escapes
        o.latencies += p.latencies
        o.false_10min += p.false_10min
        o.false_times += p.false_times
        o.dist = {k: max(o.dist.get(k, 0.0), v) for k, v in p.dist.items()}
    o.null_bands = parts[0].null_bands if parts else 0
    return o


def save_cost(n_bands: int = 500, repeat: int = 5) -> str:
    """The agent's save and restore on the `n_bands` blocks site, every band with a learned gain (the file's
    largest form: band gain learning on): file size, capture + JSON, atomic write (this machine's disk), restore."""
    site = blocks_site(n_bands)
    keys = site_demo_keys(site)
    pipe = BandPipeline(site, keys, node="bench")
    assert pipe.detector is not None
    g = pipe.detector.gains
    g.restore(replace(g.snapshot(), updates=np.full(n_bands, 5, dtype=np.int64),
                      evidence=-50.0 * np.random.default_rng(0).random(g.snapshot().evidence.shape)))
    dump_ms, write_ms = [], []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ls.FILE
        for _ in range(repeat):
            t0 = time.perf_counter()
            f = ls.capture(pipe, "bench", START)
            assert f is not None
            data = ls.dump(f)
            t1 = time.perf_counter()
            ls.write_atomic(path, data)
            dump_ms.append(1000 * (t1 - t0))
            write_ms.append(1000 * (time.perf_counter() - t1))
        fresh = BandPipeline(site, keys, node="bench")
        t0 = time.perf_counter()
        assert ls.Keeper(Path(d), "bench").restore(fresh, START, 0.0)
        restore_ms = 1000 * (time.perf_counter() - t0)
    return (f"save cost, {n_bands}-band blocks site, {len(site.receivers)} receivers, every band learned: file "
            f"{len(data)} bytes; capture + JSON {min(dump_ms):.1f}-{max(dump_ms):.1f} ms, atomic write "
            f"{min(write_ms):.1f}-{max(write_ms):.1f} ms ({repeat} saves); read + check + restore {restore_ms:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layouts", default="demo,compound")
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=1, help="seeds first-seed … first-seed + seeds - 1")
    ap.add_argument("--bands", type=int, default=60)
    ap.add_argument("--escapes", type=int, default=10)
    ap.add_argument("--before", type=float, default=20.0, help="minutes before the restart")
    ap.add_argument("--after", type=float, default=10.0, help="minutes after it")
    ap.add_argument("--escape-window", type=float, default=240.0, help="escapes cross 30 s … this after the restart")
    ap.add_argument("--learn-band-gains", action="store_true", help="turn the band-gain learner on (on by default)")
    ap.add_argument("--jobs", type=int, choices=(1,), default=1, help="runs one after the other, on one core")
    ap.add_argument("--md", type=Path, default=None, help="also write the table as markdown here")
    ap.add_argument("--save-cost", action="store_true", help="only measure the save and restore on a 500-band site")
    a = ap.parse_args()
    a.learn_band_gains = a.learn_band_gains or GainParams().learn
    if a.save_cost:
        print(save_cost())
        return
    t0 = time.time()
    rows = []
    for layout in a.layouts.split(","):
        for radio in a.radios.split(","):
            per = [run(layout, radio, a.sigma, seed, a) for seed in range(a.first_seed, a.first_seed + a.seeds)]
            for k in STARTS:
                rows.append((layout, radio, a.sigma, k, merge([p[k] for p in per]), a.seeds))
    cols, body = table(rows, a.learn_band_gains)
    t = Table(title="Restart after a power cut: cold vs restored learned state")
    for c in cols:
        t.add_column(c)
    for r in body:
        t.add_row(*r)
    Console(width=240).print(t)
    head = (f"{a.bands} bands, {a.escapes} escapes per run, restart after {a.before:g} min, scored {a.after:g} min, "
            f"seeds {a.first_seed}-{a.first_seed + a.seeds - 1}, band gains learned: {a.learn_band_gains}; "
            f"{platform.machine()}, {os.cpu_count()} "
            f"cpus; {time.time() - t0:.0f} s wall")
    print(head)
    if a.md is not None:
        md = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(r) + " |" for r in body]
        md += ["", "False breaches, s after the restart:"]
        md += [f"- {layout} {radio} σ {sigma:g} {start}: {', '.join(f'{t:.0f}' for t in sorted(o.false_times))}"
               for layout, radio, sigma, start, o, _ in rows if o.false_times]
        a.md.write_text("\n".join(md) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
