"""Wristband pipeline speed on a 500-band site (issue 3, benchmark 2).

Measures, in one process on one core: decode + verify alone (the baseline, lead's verifier),
the whole pipeline (verify + track + rules, ticking once per simulated second), and `replay`
over a JSON Lines log (parse included), with peak RSS. Extrapolates to one hour of the site.

`replay` is measured twice per round, alternately: the line-by-line loop it used to be (each line
parsed on its own, `observe` per observation) and `run_replay` (block parsing, `observe_batch`
between ticks). Both are honest replays with real ticks; the ticks are timed inside the same run, so
"per-line side" = replay minus its ticks. Wall time and CPU time of this process are both shown
(CPU time is less disturbed by other jobs on a shared machine).

Usage: .venv/bin/python -m bench.bands_speed [--seconds S] [--rounds N]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edge.bands.pipeline import BandPipeline
from edge.replay import parse_line, run_replay
from edge.sim import Simulator
from edge.sim.keys import demo_keys
from edge.sim.sites import blocks_site
from protocols.errors import PayloadError
from protocols.payloads import Alert
from protocols.site_config import SiteConfig
from protocols.verify import AdvertVerifier


def big_site(n_bands: int = 500) -> SiteConfig:
    """10 blocks of 50 people, 30 x 16 m each, in a 5 x 2 layout; a receiver inside each block and 6 outside."""
    return blocks_site(n_bands)


def replay_line_by_line(pipe: BandPipeline, lines: Iterable[str]) -> int:
    """The replay loop before block parsing (the reference): one line, one parse, one `observe`."""
    next_tick = math.inf
    n = 0
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            o = parse_line(line)
        except PayloadError:
            continue
        if n == 0:
            next_tick = math.floor(o.ts) + 1.0
        while o.ts >= next_tick:
            pipe.tick(next_tick)
            next_tick += 1.0
        n += 1
        pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
    pipe.tick(next_tick)
    return n


def timed_replay(make: Callable[[], BandPipeline],
                 run: Callable[[BandPipeline], int]) -> tuple[float, float, float, int]:
    """(wall s, CPU s, CPU s inside ticks, observations) of one replay with a fresh pipeline."""
    pipe = make()
    tick = pipe.tick
    in_ticks = [0.0]

    def timed_tick(now: float) -> list[Alert]:
        t0 = time.process_time()
        out = tick(now)
        in_ticks[0] += time.process_time() - t0
        return out

    pipe.tick = timed_tick  # type: ignore[method-assign]
    w0, c0 = time.perf_counter(), time.process_time()
    n = run(pipe)
    return time.perf_counter() - w0, time.process_time() - c0, in_ticks[0], n


def breakdown(make: Callable[[], BandPipeline], text: str) -> dict[str, float]:
    """CPU seconds by part of one block replay (instrumented, so a little slower than the rounds)."""
    import edge.replay as replay_mod
    from edge.bands.rules import BandRules

    acc: dict[str, float] = {}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] = acc.get(name, 0.0) + time.process_time() - t0
        return timed

    pipe = make()
    pipe.tick = wrap("ticks", pipe.tick)  # type: ignore[method-assign]
    pipe.observe_batch = wrap("observe_batch", pipe.observe_batch)  # type: ignore[method-assign]
    pipe.verifier.verify = wrap("verifier.verify", pipe.verifier.verify)  # type: ignore[method-assign]
    pipe.tracker.add_many = wrap("Tracker.add_many", pipe.tracker.add_many)  # type: ignore[method-assign]
    parse, on_advert = replay_mod.parse_block, BandRules.on_advert
    replay_mod.parse_block = wrap("block parse", parse)
    BandRules.on_advert = wrap("rules.on_advert", on_advert)  # type: ignore[method-assign]
    try:
        t0 = time.process_time()
        run_replay(pipe, io.StringIO(text), lambda _a: None)
        acc["total"] = time.process_time() - t0
    finally:
        replay_mod.parse_block = parse
        BandRules.on_advert = on_advert  # type: ignore[method-assign]
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="simulated seconds")
    ap.add_argument("--rounds", type=int, default=3, help="replay rounds (line-by-line and block, alternating)")
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

    # Warm-up outside every timing: compiled kernels of the tick are built (or loaded) on first use.
    warm = BandPipeline(site, keys, node="warm-up")
    for o in obs[: 2 * 1400]:
        warm.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
    warm.tick(np.floor(obs[0].ts) + 2.0)

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
    lines = text.splitlines()

    def make() -> BandPipeline:
        return BandPipeline(site, keys, node="bench")

    rounds: dict[str, list[tuple[float, float, float, int]]] = {"line": [], "block": []}
    load = [os.getloadavg()[0]]
    for _ in range(a.rounds):
        rounds["line"].append(timed_replay(make, lambda p: replay_line_by_line(p, lines)))
        rounds["block"].append(timed_replay(make, lambda p: run_replay(p, io.StringIO(text), lambda _a: None)
                                            .observations))
        load.append(os.getloadavg()[0])
    replay_s = statistics.median(r[0] for r in rounds["block"])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    tab = Table(title=f"500-band site, {a.seconds:.0f} s simulated, one core")
    for c in ("stage", "observations/s", "vs verify-only baseline", "1 h of this site would take"):
        tab.add_column(c)
    hour = 3600.0 / a.seconds
    tab.add_row("decode + verify only (baseline)", f"{n / base_s:,.0f}", "1.00", f"{base_s * hour:.0f} s")
    tab.add_row(f"pipeline: verify+track+rules ({ticks} ticks)", f"{n / full_s:,.0f}", f"{base_s / full_s:.2f}",
                f"{full_s * hour:.0f} s")
    tab.add_row("  of which: per-observation path", f"{n / (full_s - tick_s):,.0f}",
                f"{base_s / (full_s - tick_s):.2f}", f"{(full_s - tick_s) * hour:.0f} s")
    tab.add_row(f"  of which: 1 Hz ticks, {1000 * tick_s / max(ticks, 1):.1f} ms each", "-", "-",
                f"{tick_s * hour:.0f} s")
    tab.add_row("replay: parse + pipeline (block, median wall)", f"{n / replay_s:,.0f}", f"{base_s / replay_s:.2f}",
                f"{replay_s * hour:.0f} s")
    con.print(tab)

    rt = Table(title=f"replay, {a.rounds} alternating rounds: median (min-max); µs per observation line")
    for c in ("loop", "wall total", "CPU total", "CPU in ticks", "CPU per-line side (total - ticks)",
              "per-line side, 1 h of this site"):
        rt.add_column(c)
    for name, label in (("line", "line by line + observe (before)"), ("block", "block parse + observe_batch (now)")):
        rs = rounds[name]
        cols = [[1e6 * r[0] / r[3] for r in rs], [1e6 * r[1] / r[3] for r in rs], [1e6 * r[2] / r[3] for r in rs],
                [1e6 * (r[1] - r[2]) / r[3] for r in rs]]
        cells = [f"{statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" for c in cols]
        hour_s = [x * 1e-6 * n * hour for x in cols[3]]
        rt.add_row(label, *cells, f"{statistics.median(hour_s):.0f} s ({min(hour_s):.0f}-{max(hour_s):.0f})")
    con.print(rt)
    ratio = [(b[1] - b[2]) / (li[1] - li[2]) for li, b in zip(rounds["line"], rounds["block"], strict=True)]
    con.print(f"per-line side, block / line-by-line (CPU, per round): {', '.join(f'{x:.2f}' for x in ratio)}; "
              f"load average during the rounds: {min(load):.1f}-{max(load):.1f}")
    parts = breakdown(make, text)
    bt = Table(title="where one block replay's CPU goes (instrumented run; µs per observation line)")
    bt.add_column("part")
    bt.add_column("µs per line")
    bt.add_column("share of the per-line side")
    side = parts["total"] - parts["ticks"]
    inner = parts["verifier.verify"] + parts["rules.on_advert"] + parts["Tracker.add_many"]
    rows = [("block parse (regex, columns, odd lines)", parts["block parse"]),
            ("observe_batch: duplicate loop + glue", parts["observe_batch"] - inner),
            ("  verifier.verify (first reception of each advert)", parts["verifier.verify"]),
            ("  rules.on_advert (each accepted advert)", parts["rules.on_advert"]),
            ("  Tracker.add_many (vectorised filter writes)", parts["Tracker.add_many"]),
            ("replay loop (clock, batching)", side - parts["block parse"] - parts["observe_batch"]),
            ("per-line side (total - ticks)", side), ("1 Hz ticks", parts["ticks"])]
    for label, sec in rows:
        bt.add_row(label, f"{1e6 * sec / n:.2f}", f"{100 * sec / side:.0f} %")
    con.print(bt)
    con.print(f"peak RSS of this process (sim + log in memory + pipelines): {peak_mb:.0f} MB; target "
              f">= 50,000 adverts/s per core")


if __name__ == "__main__":
    main()
