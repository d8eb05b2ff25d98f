"""The window test settled from its bounds (`decide`) vs computed exactly, on the calls of a replayed log.

Replays the first `--lines` lines of an observation log through `BandPipeline` (as `qwatch-edge replay`
does) and records every call of the window test with its inputs and the thresholds the detector passed
(`DetectorParams.exact_lr` off, the default). Then it times those calls again with the thresholds and
without (exact statistic; CPU time, least of `--rounds`), and checks every row:

* the inside results (best inside point, ll_in, band-gain posterior) are bit for bit the exact ones;
* where the exact statistic is at or above the last threshold: lr, best outside point and distance too;
* below it: lr is on the same side of every threshold as the exact statistic (<, =, >), NaN where it is.

Usage: .venv/bin/python -m bench.window_decide --log LOG --site SITE --keys KEYS [--lines 240000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

import edge.bands.window_detector as wd
import edge.bands.window_test as wt
from edge.bands.pipeline import BandPipeline
from edge.replay import run_replay
from protocols.site_config import load_band_keys, load_site_config

Call = tuple[wt.LinkInputs, bool, tuple[float, ...]]


def record(site: Path, keys: Path, log: Path, lines: int) -> tuple[BandPipeline, list[Call], int]:
    """Replay `lines` lines; every window-test call of the detector with its inputs (copied) and thresholds."""
    pipe = BandPipeline(load_site_config(site), load_band_keys(keys), node="replay")
    calls: list[Call] = []
    orig = wt.run_test

    def rec(c: wt.Candidates, x: wt.LinkInputs, inside_only: bool = False,
            decide: tuple[float, ...] = ()) -> wt.WindowResult:
        calls.append((copy.deepcopy(x), inside_only, decide))  # the detector may change its arrays afterwards
        return orig(c, x, inside_only, decide)

    wd.run_test = rec  # type: ignore[attr-defined]
    ticks = [0]
    tick = pipe.tick

    def counted(now: float) -> Any:
        ticks[0] += 1
        return tick(now)

    pipe.tick = counted  # type: ignore[method-assign]
    with open(log, encoding="utf-8") as fh:
        run_replay(pipe, (line for _, line in zip(range(lines), fh, strict=False)), lambda a: None)
    wd.run_test = orig  # type: ignore[attr-defined]
    return pipe, calls, ticks[0]


def timed(cand: wt.Candidates, calls: list[Call], exact: bool, rounds: int) -> tuple[float, list[wt.WindowResult]]:
    best = float("inf")
    out: list[wt.WindowResult] = []
    for _ in range(rounds):
        t0 = time.process_time()
        out = [wt.run_test(cand, x, io, () if exact else d) for x, io, d in calls]
        best = min(best, time.process_time() - t0)
    return best, out


def check(calls: list[Call], exact: list[wt.WindowResult], dec: list[wt.WindowResult]) -> dict[str, int]:
    """Rows per outcome; raises AssertionError on any disagreement the detector could see."""
    n = {"rows": 0, "decided_rows": 0, "settled_below": 0, "exact_above": 0}
    for (_x, _io, d), e, r in zip(calls, exact, dec, strict=True):
        for f in ("in_xy", "b_mean", "b_var", "ll_in"):
            assert np.array_equal(getattr(e, f), getattr(r, f), equal_nan=True), f"inside result {f} differs"
        n["rows"] += len(e.lr)
        if not d:
            assert np.array_equal(e.lr, r.lr, equal_nan=True)
            continue
        n["decided_rows"] += len(e.lr)
        top = d[-1]
        assert np.array_equal(np.isnan(e.lr), np.isnan(r.lr))
        above = e.lr >= top
        n["exact_above"] += int(above.sum())
        for f in ("lr", "out_xy", "out_m"):
            assert np.array_equal(getattr(e, f)[above], getattr(r, f)[above], equal_nan=True), f"{f} above differs"
        ok = ~np.isnan(e.lr) & ~above
        n["settled_below"] += int((ok & (e.lr != r.lr)).sum())
        for t in d:
            for cmp in (np.less, np.less_equal, np.greater, np.greater_equal):
                assert np.array_equal(cmp(e.lr[ok], t), cmp(r.lr[ok], t)), f"a comparison with {t} differs"
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--site", type=Path, required=True)
    ap.add_argument("--keys", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=240_000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    pipe, calls, ticks = record(a.site, a.keys, a.log, a.lines)
    assert pipe.detector is not None
    cand = pipe.detector.cand
    t_exact, exact = timed(cand, calls, True, a.rounds)
    t_dec, dec = timed(cand, calls, False, a.rounds)
    n = check(calls, exact, dec)
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} CPUs", "load": [load0, os.getloadavg()[0]],
                      "lines": a.lines, "ticks": ticks, "calls": len(calls), **n,
                      "exact_cpu_s": round(t_exact, 3), "decide_cpu_s": round(t_dec, 3),
                      "exact_ms_per_tick": round(1000 * t_exact / max(ticks, 1), 2),
                      "decide_ms_per_tick": round(1000 * t_dec / max(ticks, 1), 2),
                      "ratio": round(t_exact / max(t_dec, 1e-9), 2), "decisions_agree": True}))


if __name__ == "__main__":
    main()
