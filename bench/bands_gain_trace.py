"""Is a band's learned gain closer to its true power than the prior? (issue 16, band gain learning)

Runs one null run of `bench.bands_breach` (same layout, channel, run seed and bands: walkers and
fence-standers) through the real pipeline with the band-gain learner on or off (`GainParams.learn`), and
at the end compares each band's learned gain b̂ (dB added to its advertised power) with its true power
error (the simulator's `tx_power_err`):

* the mean of b̂ − truth over the bands (what all bands absorb alike: the calibrated exponent's bias, a
  body loss), the rms error of b̂, of b̂ less that shared part, and of b̂ = 0 (not learning), per role
  (standers, walkers), and the correlation of the learned gain with the truth;
* whether the learned sd is honest: the rms of (b̂ − truth − shared part) / sd (1 if it is), the share of
  bands beyond 2 sd and the sd's quartiles, with `--min-sd` the learner's sd floor (`GainParams.min_sd_db`);
* the run's false breaches (band, second).

A learner is worth turning on only where its b̂ beats b̂ = 0 here (docs/bands.md, "Tried and not kept:
band gain learning, session 8": with main's learner it did not, on either radio).

Usage: .venv/bin/python -m bench.bands_gain_trace --layout compound --radio default --seed 66000 \
       [--sigma 6] [--bands 100] [--duration 900] [--off] [--band-gains 6]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time
from dataclasses import dataclass, field, replace

import numpy as np

from bench.bands_breach import START, Channel, build_scenario, feed_second, radio_params
from edge.bands.pipeline import BandPipeline
from edge.sim import Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.sites import layout_site


@dataclass
class GainRow:
    band: int
    role: str  # "stander" or "walker"
    truth_db: float  # true 1 m power minus the advertised one
    learned_db: float
    sd_db: float
    updates: int


@dataclass
class GainTrace:
    rows: list[GainRow] = field(default_factory=list)
    false: list[tuple[int, int]] = field(default_factory=list)  # (band, second) of every breach raised
    exponent: float = float("nan")  # calibrated (or learned) at the end
    true_exponent: float = float("nan")


def run(layout: str, radio: str, sigma: float, seed: int, n_bands: int, duration: float, learn: bool = True,
        loss: float = 0.15, gains: float = 2.0, band_gains: float | None = None,
        min_sd: float | None = None, inside: bool = False) -> GainTrace:
    """One null run (nobody escapes) with the band-gain learner on (`learn`) or off."""
    ch = Channel(radio, sigma, loss, gains, band_gains_db=band_gains)
    site = layout_site(layout, n_bands, shadowing_db=sigma)
    keys = site_demo_keys(site)
    sc, _ = build_scenario(site, seed, 0, ["stand"], duration, site.rules.breach_dwell_s)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc, radio=radio_params(site, ch))
    pipe = BandPipeline(site, keys, node="gain-trace")
    det = pipe.detector
    assert det is not None
    det.gains.p = replace(det.gains.p, learn=learn, inside=inside)
    if min_sd is not None:
        det.gains.p = replace(det.gains.p, min_sd_db=min_sd)
    out = GainTrace()
    for s in range(1, int(duration) + 1):
        now = START + s
        alerts = feed_second(sim, pipe, now)
        out.false += [(int(getattr(a.subject, "band", -1)), s) for a in alerts
                      if a.type == "geofence_breach" and a.state == "raised"]
    index = pipe.tracker.index
    sim_idx = {b: i for i, b in enumerate(sim.band_ids)}
    err = np.asarray(sim.channel.tx_power_err)
    for k, b in enumerate(site.bands):  # build_scenario: every third band from the second on stands at a fence
        i = index[b.id]
        out.rows.append(GainRow(b.id, "stander" if k % 3 == 1 else "walker", float(err[sim_idx[b.id]]),
                                float(det.gains.mean[i]), float(det.gains.sd(np.array([i]))[0]),
                                int(det.gains.updates[i])))
    out.exponent = float(det.exponent.value(pipe.tracker.calibration.exponent))
    ch_obj = sim.channel
    out.true_exponent = float(getattr(ch_obj, "exponent", getattr(getattr(ch_obj, "p", None), "path_loss_exponent",
                                                                   float("nan"))))
    return out


def summary(rows: list[GainRow]) -> dict[str, float]:
    """Shared part, rms errors (learned, learned less the shared part, not learning) and correlation."""
    t = np.array([r.truth_db for r in rows])
    b = np.array([r.learned_db for r in rows])
    e = b - t
    shared = float(e.mean()) if len(e) else float("nan")
    corr = float(np.corrcoef(t, b)[0, 1]) if len(e) > 2 and b.std() > 0 and t.std() > 0 else float("nan")
    sd = np.array([r.sd_db for r in rows])
    z = (e - shared) / sd if len(e) else np.zeros(0)
    q = np.percentile(sd, [25, 50, 75]) if len(e) else np.full(3, np.nan)
    return {"n": float(len(e)), "shared_db": shared, "rms_learned": float(np.sqrt((e**2).mean())),
            "rms_less_shared": float(np.sqrt(((e - shared) ** 2).mean())), "rms_prior": float(np.sqrt((t**2).mean())),
            "corr": corr, "rms_z": float(np.sqrt((z**2).mean())) if len(z) else float("nan"),
            "beyond_2sd": float((np.abs(z) > 2).mean()) if len(z) else float("nan"),
            "sd_q1": float(q[0]), "sd_q2": float(q[1]), "sd_q3": float(q[2])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="compound")
    ap.add_argument("--radio", default="default")
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=66000, help="the null run's seed (bands_breach --seed + 50,000 + k)")
    ap.add_argument("--bands", type=int, default=100)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--off", action="store_true", help="learner off (b̂ stays 0: the false breaches without it)")
    ap.add_argument("--band-gains", type=float, default=None, help="hidden band power spread, ± dB (else ±2, as gains)")
    ap.add_argument("--inside", action="store_true", help="learn from confidently-inside windows only (GainParams)")
    ap.add_argument("--min-sd", type=float, default=None, help="the learner's sd floor, dB (default: the prior's)")
    a = ap.parse_args(argv)
    t0 = time.process_time()
    tr = run(a.layout, a.radio, a.sigma, a.seed, a.bands, a.duration, learn=not a.off, band_gains=a.band_gains,
             min_sd=a.min_sd, inside=a.inside)
    print(f"# {a.layout} {a.radio} σ {a.sigma:g} seed {a.seed}, {a.bands} bands × {a.duration:g} s, band powers "
          f"±{a.band_gains or 2.0:g} dB, learner "
          f"{'off' if a.off else 'on'}{', inside only' if a.inside else ''}; exponent {tr.exponent:.2f} "
          f"(true {tr.true_exponent:.2f}); load "
          f"{os.getloadavg()[0]:.1f}")
    print("| bands | n | learned − true, mean dB | rms learned | rms less the mean | rms of b̂ = 0 | corr "
          "| rms z | beyond 2 sd | sd quartiles dB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for role in ("stander", "walker"):
        sel = [r for r in tr.rows if r.role == role and (a.off or r.updates > 0)]
        s = summary(sel)
        print(f"| {role}s (learned at least once) | {int(s['n'])} | {s['shared_db']:+.2f} | {s['rms_learned']:.2f} | "
              f"{s['rms_less_shared']:.2f} | {s['rms_prior']:.2f} | {s['corr']:+.2f} | {s['rms_z']:.2f} | "
              f"{s['beyond_2sd']:.0%} | {s['sd_q1']:.2f} / {s['sd_q2']:.2f} / {s['sd_q3']:.2f} |")
    print(f"false breaches (band, s): {tr.false}")
    print(f"# CPU {time.process_time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
