"""Why escapes are missed (issue 16, recall side): a per-escape trace of the window breach test.

Runs one recall run of `bench.bands_breach` (same layout, channel, seed, scenario: the run of a row of
its recall table) through the real pipeline and, for every escapee, every second from its crossing to
`breach_dwell_s` + 30 s after it, evaluates the window test itself (side-effect free: the detector's
own inputs and kernel, no learning) on every long window, whether or not the scheduler tested the
band that second, plus three diagnostic variants on the same adverts:

* ``sched``: what the pipeline's scheduler actually fed the rules (NaN = not tested that second);
* ``full``: the test on every window every second (what an every-second schedule would see);
* ``truepos``: the outside candidates replaced by the escapee's true position now (is the true
  position in the grid / pruned?);
* ``exp``: the true path-loss exponent only; ``gains``: the true receiver gains and band power only;
  ``oracle``: both (the calibration's share).

Per escape it prints kind, distance out, the pipeline's latency, the best statistic of each variant
within the deadline and when it first reached the threshold (the raw statistic; ``phi`` is the site's
dispersion φ at the deadline and ``full_phi_first`` when the raw statistic first reached 13·φ, the
threshold the rules applied: reaching 13 but not 13·φ is a miss of the threshold's scale), the winning
window and outside point, and the receivers that heard the band (k of N, mean level, learned floor) in
the deadline's longest window. `--trace BAND` prints that escapee's second-by-second series.

Usage: .venv/bin/python -m bench.bands_recall_trace [--layout compound] [--radio alt] [--sigma 6]
       [--seed 16000] [--run-index 0] [--escapes 16] [--bands 48] [--duration 660] [--trace BAND ...]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.bands_breach import START, Channel, build_scenario, feed_second, radio_params
from edge.bands.hearing import miss_table
from edge.bands.pipeline import BandPipeline
from edge.bands.window_detector import WindowDetector
from edge.bands.window_test import CELL_M, CELL_RATIO, Candidates, LinkInputs, WindowResult, run_test
from edge.sim import Simulator
from edge.sim.escapes import KINDS, AllowedArea, Escape
from edge.sim.keys import site_demo_keys
from edge.sim.simulator import BAND_POWER_DBM
from edge.sim.sites import layout_site

F64 = NDArray[np.float64]
VARIANTS = ("full", "truepos", "exp", "gains", "rxg", "bandp", "oracle")


@dataclass
class Trace:
    """One escapee's series (one entry per second from the crossing)."""

    esc: Escape
    t: list[float] = field(default_factory=list)  # s since crossing
    true_out: list[float] = field(default_factory=list)  # true distance beyond the allowed area
    sched: list[float] = field(default_factory=list)  # lr the rules got (NaN: not tested)
    lr: dict[str, list[list[float]]] = field(default_factory=dict)  # variant -> per second, per window
    best: list[tuple[float, float, float]] = field(default_factory=list)  # full: best window's out x, y, out_m
    heard: list[str] = field(default_factory=list)  # receivers heard in the longest window: "rx k/N lvl"
    phi: list[float] = field(default_factory=list)  # the site's dispersion φ (the threshold is 13·φ)


def _cand_at(cand: Candidates, s: int, pts_out: F64, rx_pos: F64, min_d: float) -> Any:
    """A candidate structure with set s's inside points and the given outside points only."""
    inside = cand.pts[cand.lo[s]:cand.mid[s]]
    pts = np.concatenate([inside, pts_out])
    d = np.linalg.norm(pts[:, None, :] - rx_pos[None, :, :], axis=2)
    logd = np.ascontiguousarray(10.0 * np.log10(np.maximum(d, min_d)))
    c: Any = object.__new__(Candidates)  # the real class (the kernel needs its search cells), filled by hand
    c.pts, c.logd = pts, logd
    c.out_m = np.concatenate([np.zeros(len(inside)), np.full(len(pts_out), 99.0)])
    c.lo, c.mid, c.hi = (np.array([v], dtype=np.int64) for v in (0, len(inside), len(pts)))
    c.set_cells(CELL_M, CELL_RATIO)
    return c


class Tracer:
    """Evaluates the detector's window test on chosen bands, side-effect free, in several variants."""

    def __init__(self, pipe: BandPipeline, sim: Simulator) -> None:
        det = pipe.detector
        assert isinstance(det, WindowDetector)
        self.det, self.pipe, self.sim = det, pipe, sim
        det.s = replace(det.s, exact_lr=True)  # the trace shows the statistic itself, not just its decisions
        tr = pipe.tracker
        ch = sim.channel
        rx_of = [sim.rx_ids.index(r) for r in tr.rx_ids]
        off = np.array(tr.rx_offset)
        # Stored levels are reported + offset; the hardware gain is -offset + deviation: the true
        # correction of a stored level is minus the deviation.
        self.true_corr = -(np.asarray(ch.rx_gain)[rx_of] + off)
        sim_idx = {b: i for i, b in enumerate(sim.band_ids)}
        self.true_power = {b: BAND_POWER_DBM + float(ch.tx_power_err[sim_idx[b]]) for b in sim.band_ids}
        self.true_exponent = float(getattr(ch, "exponent", ch.p.path_loss_exponent))
        self.sched: dict[tuple[int, int], float] = {}
        orig = det.tick

        def tick(now: float, rows: Any, clear_rows: Any, fix_out_m: Any) -> dict[int, Any]:
            out = orig(now, rows, clear_rows, fix_out_m)
            for i, v in out.items():
                self.sched[(i, math.floor(now))] = v.lr
            return out

        det.tick = tick  # type: ignore[method-assign]

    def inputs(self, i: int, now: float, w: float) -> LinkInputs:
        det = self.det
        listen = np.array(det.tracker.rx_last) > now - 5.0
        return det._inputs(np.array([i], dtype=np.int64), now, w, listen)

    def band_power(self, x: LinkInputs, band: int) -> LinkInputs:
        """The same inputs with the band's true power known (to 0.3 dB) and nothing else."""
        return replace(x, power=np.array([self.true_power[band]]), sb=np.array([0.3]))

    def oracle(self, x: LinkInputs, band: int, gains: bool = True, exponent: bool = True,
               power: bool = True) -> LinkInputs:
        """The same adverts with the true receiver gains (floors moved with them) and band power (`power`)
        and/or exponent."""
        det = self.det
        if not gains:
            return replace(x, exponent=self.true_exponent)
        tr = det.tracker
        corr, _var = det._gain
        learned = tr.calibration.rx_bias + corr
        xbar = np.where(x.k > 0, x.xbar - learned[None, :] + self.true_corr[None, :], 0.0)
        if x.xb is not None and x.kb is not None:
            x = replace(x, xb=np.where(x.kb > 0, x.xb + (self.true_corr - learned)[None, :, None], 0.0))
        raw_floor = det.hearing.floor - learned
        floor = raw_floor + self.true_corr
        logmiss = np.stack([miss_table(float(f), det.hearing.fast_sd, det.hearing.p, float(q))
                            for f, q in zip(floor, det.hearing.loss, strict=True)])
        sd = np.sqrt(det.sigma**2 * det.p.slow_fraction + det.p.model_error_db**2)
        bp = (np.array([self.true_power[band]]), np.array([0.3])) if power else (x.power, x.sb)
        return replace(x, xbar=xbar, power=bp[0], sb=bp[1],
                       slow_sd=np.full_like(x.slow_sd, sd), floor=floor, logmiss=logmiss,
                       exponent=self.true_exponent if exponent else x.exponent)

    def evaluate(self, i: int, band: int, now: float, truth_xy: tuple[float, float]) -> dict[str, Any]:
        det = self.det
        out: dict[str, Any] = {v: [] for v in VARIANTS}
        best = (-math.inf, (math.nan, math.nan, math.nan))
        heard = ""
        for w in det.windows:
            x = self.inputs(i, now, w)
            r: WindowResult = run_test(det.cand, x)
            out["full"].append(float(r.lr[0]))
            if r.lr[0] > best[0]:
                best = (float(r.lr[0]), (float(r.out_xy[0, 0]), float(r.out_xy[0, 1]), float(r.out_m[0])))
            s = int(x.sets[0])
            c1 = _cand_at(det.cand, s, np.array([truth_xy]), det.tracker.rx_pos, det.p.min_distance_m)
            out["truepos"].append(float(run_test(c1, replace(x, sets=np.zeros(1, dtype=np.int64))).lr[0]))
            out["exp"].append(float(run_test(det.cand, self.oracle(x, band, gains=False)).lr[0]))
            out["gains"].append(float(run_test(det.cand, self.oracle(x, band, exponent=False)).lr[0]))
            out["rxg"].append(float(run_test(det.cand, self.oracle(x, band, exponent=False, power=False)).lr[0]))
            out["bandp"].append(float(run_test(det.cand, self.band_power(x, band)).lr[0]))
            out["oracle"].append(float(run_test(det.cand, self.oracle(x, band)).lr[0]))
            if w == max(det.windows):
                ids = det.tracker.rx_ids
                heard = " ".join(f"{ids[r]}:{x.k[0, r]:.0f}/{x.n_sent[0]:.0f}@{x.xbar[0, r]:.0f}"
                                 for r in np.argsort(-x.k[0]) if x.k[0, r] > 0)
        out["best"] = best[1]
        out["heard"] = heard
        return out


def run(layout: str, radio: str, sigma: float, seed: int, duration: float, n_bands: int, n_escapes: int,
        kinds: list[str], loss: float = 0.15, gains: float = 2.0) -> tuple[list[Trace], dict[str, Any]]:
    """One recall run of bands_breach with every escapee traced."""
    ch = Channel(radio, sigma, loss, gains)
    site = layout_site(layout, n_bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    dwell = site.rules.breach_dwell_s
    sc, escapes = build_scenario(site, seed, n_escapes, kinds, duration, dwell)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc, radio=radio_params(site, ch))
    pipe = BandPipeline(site, keys, node="trace")
    tracer = Tracer(pipe, sim)
    index = pipe.tracker.index
    traces = {e.band: Trace(e, lr={v: [] for v in VARIANTS}) for e in escapes}
    area = AllowedArea(site, list(site.bands[0].allowed_zones))
    raised: dict[int, float] = {}
    deadline = dwell + 30.0
    for s in range(1, int(duration) + 1):
        now = START + s
        alerts = feed_second(sim, pipe, now)
        for a in alerts:
            b = int(getattr(a.subject, "band", -1))
            if a.type == "geofence_breach" and a.state == "raised" and b in traces and b not in raised \
                    and s >= traces[b].esc.cross_at:
                raised[b] = s - traces[b].esc.cross_at
        truth = sim.truth(now)
        for b, tr in traces.items():
            t_rel = s - tr.esc.cross_at
            if not (0.0 <= t_rel <= deadline + 5.0):
                continue
            i = index[b]
            ev = tracer.evaluate(i, b, now, truth[b])
            tr.t.append(t_rel)
            tr.true_out.append(float(area.out_m(np.array([truth[b]]))[0]))
            tr.sched.append(tracer.sched.get((i, math.floor(now)), math.nan))
            for v in VARIANTS:
                tr.lr[v].append(ev[v])
            tr.best.append(ev["best"])
            tr.heard.append(ev["heard"])
            tr.phi.append(float(pipe.detector.null.scale) if pipe.detector is not None else 1.0)
    det = pipe.detector
    assert det is not None
    info = {"threshold": pipe._rules_params.window_threshold, "deadline": deadline, "dwell": dwell,
            "windows": list(det.windows), "raised": raised,
            "exponent": float(det.exponent.value(pipe.tracker.calibration.exponent)),
            "true_exponent": tracer.true_exponent,
            "gain_err": (pipe.tracker.calibration.rx_bias + det._gain[0] - tracer.true_corr).round(1).tolist(),
            "rx": pipe.tracker.rx_ids, "floor": det.hearing.floor.round(1).tolist(),
            "loss": det.hearing.loss.round(2).tolist(), "tau": det.clock.tau, "var_v": det.clock.var_v,
            "clock_ready_s": det.clock.ready_at - START,
            "blocks": [det.clock.blocks(w) for w in det.windows]}
    return list(traces.values()), info


def first_at(t: list[float], v: list[float], thr: float, until: float) -> float | None:
    for a, b in zip(t, v, strict=True):
        if a <= until and b == b and b >= thr:
            return a
    return None


def _nanmax(v: list[float]) -> float:
    w = [x for x in v if x == x]
    return max(w) if w else math.nan


def _r1(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def summary(traces: list[Trace], info: dict[str, Any]) -> list[dict[str, Any]]:
    thr, dl = info["threshold"], info["deadline"]
    rows = []
    for tr in traces:
        e = tr.esc
        ok = [k for k, a in enumerate(tr.t) if a <= dl]
        row: dict[str, Any] = {"band": e.band, "kind": e.kind, "how": e.how, "out_m": round(e.out_m, 1),
                               "wander": e.wander, "latency": _r1(info["raised"].get(e.band))}
        row["caught"] = row["latency"] is not None and row["latency"] <= dl
        sched = [tr.sched[k] for k in ok]
        row["tested"] = sum(1 for v in sched if v == v)
        row["sched_max"] = round(max((v for v in sched if v == v), default=math.nan), 1)
        for v in VARIANTS:
            per = [_nanmax(tr.lr[v][k]) for k in ok]
            row[f"{v}_max"] = round(_nanmax(per), 1)
            row[f"{v}_first"] = _r1(first_at([tr.t[k] for k in ok], per, thr, dl))
            if v == "full":
                kb = ok[int(np.nanargmax(per))] if any(p == p for p in per) else None
                row["best_win"] = (info["windows"][int(np.nanargmax(tr.lr[v][kb]))] if kb is not None else None)
                row["unheard_s"] = sum(1 for k in ok if all(x != x for x in tr.lr[v][k]))
                row["best_out"] = [round(x, 1) for x in tr.best[kb]] if kb is not None else None
                row["truth_out_at_best"] = round(tr.true_out[kb], 1) if kb is not None else None
        k_dl = max(ok) if ok else None
        row["heard_at_deadline"] = tr.heard[k_dl] if k_dl is not None else ""
        row["phi"] = round(tr.phi[k_dl], 2) if k_dl is not None else None
        # The raw statistic against the threshold the rules applied (13·φ): reached 13 but not 13·φ = threshold's miss.
        full = [_nanmax(tr.lr["full"][k]) for k in ok]
        row["full_phi_first"] = _r1(next((tr.t[k] for k, v in zip(ok, full, strict=True)
                                          if v == v and v >= thr * tr.phi[k]), None))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="compound")
    ap.add_argument("--radio", default="alt")
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=16_000, help="bands_breach --seed (the run's seed is derived)")
    ap.add_argument("--run-index", type=int, default=0, help="k of bands_breach's recall runs (seed + 100 k + σ)")
    ap.add_argument("--escapes", type=int, default=16)
    ap.add_argument("--bands", type=int, default=48)
    ap.add_argument("--duration", type=float, default=660.0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--trace", type=int, action="append", default=[], help="print this band's series")
    ap.add_argument("--trace-missed", action="store_true", help="print every missed escapee's series")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    seed = a.seed + 100 * a.run_index + int(a.sigma)
    t0 = time.process_time()
    traces, info = run(a.layout, a.radio, a.sigma, seed, a.duration, a.bands, a.escapes, a.kinds.split(","))
    rows = summary(traces, info)
    print(f"# {a.layout} {a.radio} σ {a.sigma:g} run seed {seed}; threshold {info['threshold']}, deadline "
          f"{info['deadline']:.0f} s, windows {info['windows']}; exponent {info['exponent']:.2f} (true "
          f"{info['true_exponent']:.2f}); shadow clock τ {info['tau']:g} s, σ_v² {info['var_v']:.1f} dB², blocks "
          f"{info['blocks']} (from {info['clock_ready_s']:.0f} s); load {os.getloadavg()[0]:.1f}")
    print("# receiver gain error after calibration (dB, learned - true): "
          + " ".join(f"{r}:{g:+.1f}" for r, g in zip(info["rx"], info["gain_err"], strict=True)))
    print("# floors (corrected): " + " ".join(f"{r}:{f:.0f}" for r, f in zip(info["rx"], info["floor"], strict=True))
          + "; plateau loss " + " ".join(f"{q:.2f}" for q in info["loss"]))
    cols = ["band", "kind", "how", "out_m", "wander", "caught", "latency", "tested", "sched_max", "phi", "full_max",
            "full_first", "full_phi_first", "truepos_max", "truepos_first", "exp_max", "gains_max", "rxg_max",
            "bandp_max", "oracle_max", "oracle_first",
            "unheard_s", "best_win", "best_out", "truth_out_at_best"]
    print("| " + " | ".join(cols) + " | heard (longest window at the deadline) |")
    print("|" + "---|" * (len(cols) + 1))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + f" | {r['heard_at_deadline']} |")
    for b in a.trace + [r["band"] for r in rows if a.trace_missed and not r["caught"] and r["band"] not in a.trace]:
        tr = next(t for t in traces if t.esc.band == b)
        print(f"\n## band {b}: {tr.esc.kind} {tr.esc.how} out {tr.esc.out_m:.1f} m")
        print("t | true out | sched | full (per window) | truepos | oracle | best out (x, y, out_m) | heard")
        for k, t in enumerate(tr.t):
            f = "/".join(f"{v:.1f}" for v in tr.lr["full"][k])
            tp = "/".join(f"{v:.1f}" for v in tr.lr["truepos"][k])
            orc = "/".join(f"{v:.1f}" for v in tr.lr["oracle"][k]) + " exp " + "/".join(
                f"{v:.1f}" for v in tr.lr["exp"][k]) + " gains " + "/".join(f"{v:.1f}" for v in tr.lr["gains"][k])
            bx = ", ".join(f"{v:.0f}" for v in tr.best[k])
            print(f"{t:.0f} | {tr.true_out[k]:.1f} | {tr.sched[k]:.1f} | {f} | {tp} | {orc} | {bx} | {tr.heard[k]}")
    print(f"# CPU {time.process_time() - t0:.0f} s")
    if a.json is not None:
        a.json.write_text(json.dumps({"info": {k: v for k, v in info.items() if k != "raised"}, "rows": rows},
                                     default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
