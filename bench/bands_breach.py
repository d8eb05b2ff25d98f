"""Breach detector vs the ideal observer (issue 16): recall per escape kind, clears, false breaches.

Drives the real pipeline (`BandPipeline`: verify → track → rules, whatever detector is on main) over
simulator output and scores its `geofence_breach` alerts:

* **recall** per layout × radio model × σ: escapes of every kind (`edge.sim.escapes`: walk out and
  keep walking, walk out 20–35 m and stand or wander within 5 m, the same and back inside 2–4 min
  later, out of range 200 m; each over the fence or through the gate) caught within
  `breach_dwell_s` + 30 s of the crossing, beside the ideal observer (`bands_ideal.py`, run on the
  very same observations) with the true band gain, the band gain known to ±1 dB and unknown, and
  the software's gap to each;
* **clear latency** of the escapees who come back (target `clear_dwell_s` + 20 s after re-entry);
* **false breaches** per 100 band-hours with the exact Poisson 95 % upper bound, over null runs of
  walkers and fence-standers (0.5–3 m inside a fence), start-ups included (every run starts cold);
* **one bad receiver** (an inside receiver reading 6 or 4 dB low, or deaf below −85 dBm): false
  breaches and the most in any 10 minutes (a burst), the gain the pipeline learned for that receiver
  (beacons + bands, against the others' median) beside the true one, and the state it reports;
* **model check**: the simulator's default channel against what the ideal observer assumes.

Runs are independent processes (`--jobs`, default 2: this machine has 2 shared cores).

Usage: .venv/bin/python -m bench.bands_breach [--quick] [--layouts demo,perimeter,compound,lwing]
       [--radios default,alt] [--sigmas 4,6,8] [--kinds walk,stand,return,range] [--seeds N]
       [--null-hours BH] [--bad gain-6,gain-4,deaf-85] [--budget 0.5] [--loss 0.15] [--gains 2]
       [--jobs 2] [--no-ideal] [--md FILE] [--[no-]learn-band-gains] [--[no-]beacon-fit] [--[no-]beacon-fit-gains]
       [--band-gain-min-sd 2] [--resid-bias-sd 2] [--band-gain-place-tau S]
"""

from __future__ import annotations

import os

# One BLAS thread per process: the ideal observer's small matrix products are 3x slower when OpenBLAS
# spins up threads on a loaded 2-core machine, and the runs are already parallel processes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import pickle
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.bands_ideal import VARIANTS, IdealObserver, calibrate_threshold, first_crossing, model_check
from edge.bands.pipeline import BandPipeline
from edge.bands.window_exponent import ExponentLearner
from edge.sim import AltRadioParams, RadioParams, Scenario, Simulator
from edge.sim.escapes import HOWS, KINDS, AllowedArea, Escape, make_escape
from edge.sim.keys import site_demo_keys
from edge.sim.radio import RadioChannel
from edge.sim.radio_alt import AltRadioChannel
from edge.sim.scenarios import standing_near_fence, walking
from edge.sim.simulator import BAND_POWER_DBM
from edge.sim.sites import BREACH_LAYOUTS, DEFAULT_BREACH_LAYOUTS, layout_site
from protocols.payloads import Alert
from protocols.site_config import SiteConfig

START = 1_700_000_000.0
LEARN_ENV = "QWATCH_BENCH_LEARN_BAND_GAINS"
# Escapes cross no earlier than this many seconds into a recall run (`--cross-after`): a later first crossing lets
# the learners see the escapee's band for that long as a resident first, as a real site's have for hours.
CROSS_AFTER_ENV = "QWATCH_BENCH_CROSS_AFTER"
MIN_SD_ENV = "QWATCH_BENCH_BAND_GAIN_MIN_SD"  # the band-gain learner's sd floor (`--band-gain-min-sd`)
PLACE_TAU_ENV = "QWATCH_BENCH_BAND_GAIN_PLACE_TAU"  # `--band-gain-place-tau` (GainParams.place_tau_s)
RESID_BIAS_ENV = "QWATCH_BENCH_RESID_BIAS_SD"  # `--resid-bias-sd` (HearingParams.resid_bias_sd_db)
GAIN_INSIDE_ENV = "QWATCH_BENCH_BAND_GAIN_INSIDE"  # `--band-gain-inside` (GainParams.inside)
LEARN_EXPONENT_ENV = "QWATCH_BENCH_LEARN_EXPONENT"  # `--learn-exponent` (ExponentParams.learn)
TRUE_EXPONENT_ENV = "QWATCH_BENCH_TRUE_EXPONENT"  # `--true-exponent`: a diagnostic, not a product option
BEACON_FIT_ENV = "QWATCH_BENCH_BEACON_FIT"  # `--beacon-fit` (BeaconFitParams.learn)
BEACON_GAINS_ENV = "QWATCH_BENCH_BEACON_FIT_GAINS"  # `--beacon-fit-gains` (BeaconFitParams.use_gains)
BAD_KINDS = {"gain-6": ("gain", -6.0), "gain-4": ("gain", -4.0), "deaf-85": ("deaf", -85.0)}


@dataclass(frozen=True)
class Channel:
    """What the simulated radio is: model, σ, loss, hidden gain spread, optional bad receiver."""

    radio: str
    sigma: float
    loss: float
    gains_db: float
    bad: str | None = None  # a BAD_KINDS key
    band_gains_db: float | None = None  # band powers' spread when not gains_db (receivers and bands apart)

    @property
    def band_db(self) -> float:
        return self.gains_db if self.band_gains_db is None else self.band_gains_db


def _channel(a: argparse.Namespace, radio: str, sigma: float, bad: str | None = None) -> Channel:
    return Channel(radio, sigma, a.loss, a.gains, bad, a.band_gains)


def inside_receiver(site: SiteConfig) -> int:
    """Index of the first receiver inside the bands' allowed area (the one whose error hurts most)."""
    area = AllowedArea(site, list(site.bands[0].allowed_zones))
    pos = np.array([r.position for r in site.receivers], dtype=np.float64)
    inside = np.nonzero(area.inside(pos))[0]
    return int(inside[0]) if len(inside) else 0


def radio_params(site: SiteConfig, ch: Channel) -> RadioParams | AltRadioParams:
    bad: tuple[tuple[int, float], ...] = ()
    deaf: tuple[tuple[int, float], ...] = ()
    if ch.bad is not None:
        what, value = BAD_KINDS[ch.bad]
        if what == "gain":
            bad = ((inside_receiver(site), value),)
        else:
            deaf = ((inside_receiver(site), value),)
    if ch.radio == "alt":
        return AltRadioParams.like(ch.sigma, ch.loss, rx_gain_error_db=ch.gains_db, power_error_db=ch.band_db,
                                   bad_rx=bad, deaf_rx=deaf)
    return RadioParams(path_loss_exponent=site.radio.path_loss_exponent, shadowing_db=ch.sigma, base_loss=ch.loss,
                       rx_gain_uniform_db=ch.gains_db, band_power_uniform_db=ch.band_db, bad_rx=bad, deaf_rx=deaf)


def check_channel(params: RadioParams | AltRadioParams, seed: int, n_tx: int = 6) -> RadioChannel | AltRadioChannel:
    """A channel with one receiver at the origin and `n_tx` transmitters, for the model check."""
    rng = np.random.default_rng(seed)
    if isinstance(params, AltRadioParams):
        return AltRadioChannel(params, np.zeros((1, 2)), np.zeros(1), n_tx, rng)
    return RadioChannel(params, np.zeros((1, 2)), np.zeros(1), n_tx, rng)


# -- one simulated run --------------------------------------------------------------------------------
@dataclass
class RunResult:
    """Everything a run gives back (picklable; merged per table row)."""

    layout: str
    channel: Channel
    seed: int
    duration: float
    escapes: list[dict[str, Any]] = field(default_factory=list)  # per escape: kind, how, times, outcomes
    false_ts: list[float] = field(default_factory=list)  # software false breaches (s since start)
    false_bands: list[int] = field(default_factory=list)
    band_hours: float = 0.0  # null exposure of this run
    ideal_null: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)  # variant -> (t, D) series
    ideal_null_hours: float = 0.0
    ideal_escape: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)
    bad_rx_bias: tuple[float, float] | None = None  # bad receiver: (bias the calibration learned, true), vs others
    bad_rx_state: str | None = None  # bad receiver: its state in `BandPipeline.receivers()` at the end of the run
    cpu_s: float = 0.0
    alerts: list[str] = field(default_factory=list)  # every alert's JSON: a speed change must keep them identical
    null_scale: float = 1.0  # the window statistic's dispersion φ the pipeline learned (`empirical_null`), at the end
    null_misfit: bool = False  # ... and whether it reported the model as not fitting the site (`misfit`), at the end
    # Per receiver (site order): the gain correction the pipeline learned (beacons + bands, `gain_dev_db`) minus the
    # true one (minus the hardware's deviation from its configured offset), dB, at the end of the run.
    rx_gain_err: list[float] = field(default_factory=list)
    rx_ids: list[str] = field(default_factory=list)


def build_scenario(site: SiteConfig, seed: int, n_escapes: int, kinds: Sequence[str], duration: float,
                   dwell: float, earliest: float = 90.0, latest: float | None = None) -> tuple[Scenario, list[Escape]]:
    """Walkers (2/3) and fence-standers (1/3), and the first `n_escapes` bands escaping at staggered times
    (crossings uniform from `earliest` to `latest`; by default the latest that leaves the dwell, 30 s and a return
    in the run). One draw per escapee and per fence-stander, whatever the bounds."""
    sc = walking(site, seed)
    rng = np.random.default_rng(seed)
    escapes: list[Escape] = []
    if latest is None:
        latest = max(duration - dwell - 30.0 - (260.0 if "return" in kinds else 0.0), earliest + 30.0)
    for k, b in enumerate(site.bands):
        if k < n_escapes:
            kind, how = kinds[k % len(kinds)], HOWS[(k // len(kinds)) % len(HOWS)]
            cross = float(rng.uniform(earliest, latest))
            e = make_escape(site, b.id, seed, kind=kind, how=how, cross_at=cross, duration_s=duration)
            sc.scripts[b.id] = e.script
            escapes.append(e)
        elif k % 3 == 1:
            sc.scripts[b.id] = standing_near_fence(site, b.id, seed, float(rng.uniform(0.5, 3.0)))
    return sc, escapes


def feed_second(sim: Simulator, pipe: BandPipeline, now: float) -> list[Alert]:
    """One simulated second into the pipeline: every advert heard up to `now`, then the tick; the alerts."""
    alerts: list[Alert] = []
    for o in sim.advance(now):
        alerts += pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
    return alerts + pipe.tick(now)


def simulate(layout: str, ch: Channel, seed: int, duration: float, n_bands: int, n_escapes: int,
             kinds: Sequence[str], ideal: bool) -> RunResult:
    """One run: simulate, feed the pipeline (and the ideal observer), score every band."""
    t_cpu = time.process_time()
    site = layout_site(layout, n_bands, shadowing_db=ch.sigma)
    keys = site_demo_keys(site)
    rules = site.rules
    earliest = float(os.environ.get(CROSS_AFTER_ENV, "90"))
    sc, escapes = build_scenario(site, seed, n_escapes, kinds, duration, rules.breach_dwell_s, earliest)
    sim = Simulator(site, keys, seed=seed, start_ts=START, scenario=sc, radio=radio_params(site, ch))
    pipe = BandPipeline(site, keys, node="bench")
    apply_variant(pipe, sim)
    # The ideal observer costs far more than the pipeline: it watches the escapees and as many null bands.
    watched = [b.id for b in site.bands[:2 * n_escapes]] if n_escapes else [b.id for b in site.bands[:16]]
    obs_ideal = (IdealObserver(site, sim, BAND_POWER_DBM, dwell_s=rules.breach_dwell_s, seed=seed, bands=watched)
                 if ideal else None)
    raised: dict[int, list[float]] = {}
    cleared: dict[int, list[float]] = {}
    trail: list[str] = []
    for s in range(1, int(duration) + 1):
        now = START + s
        alerts = []
        for o in sim.advance(now):
            alerts += pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data)
            if obs_ideal is not None:
                obs_ideal.observe(o.ts, o.rx, o.rssi, o.data)
        alerts += pipe.tick(now)
        if obs_ideal is not None:
            obs_ideal.tick(now)
        trail += [a.to_json() for a in alerts]
        for a in alerts:
            if a.type == "geofence_breach":
                band = int(getattr(a.subject, "band", -1))  # breach alerts always name a band
                (raised if a.state == "raised" else cleared).setdefault(band, []).append(a.ts - START)
    res = RunResult(layout, ch, seed, duration)
    res.alerts = trail
    score(res, site, escapes, raised, cleared, duration)
    null_state = pipe.breach_null()
    res.null_scale, res.null_misfit = float(null_state.get("scale", 1.0)), bool(null_state.get("misfit", 0))
    res.rx_ids, res.rx_gain_err = list(sim.rx_ids), gain_errors(pipe, sim)
    if ch.bad is not None:
        res.bad_rx_bias = learned_bias(pipe, sim, inside_receiver(site))
        health = pipe.receivers(START + duration).get(sim.rx_ids[inside_receiver(site)], {})
        res.bad_rx_state = str(health.get("state", "-"))
    if obs_ideal is not None:
        score_ideal(res, obs_ideal, escapes, duration)
    res.cpu_s = time.process_time() - t_cpu
    return res


def apply_variant(pipe: BandPipeline, sim: Simulator) -> None:
    """The learners' switches of `main`'s flags, passed to every run (worker processes too) through the
    environment: "1" on, "0" off, unset the product's default."""
    det = pipe.detector
    if det is None:
        return
    def switch(env: str, default: bool) -> bool:
        return {"1": True, "0": False}.get(os.environ.get(env, ""), default)

    min_sd = os.environ.get(MIN_SD_ENV)
    det.gains.p = replace(det.gains.p, learn=switch(LEARN_ENV, det.gains.p.learn),
                          inside=switch(GAIN_INSIDE_ENV, det.gains.p.inside),
                          min_sd_db=float(min_sd) if min_sd else det.gains.p.min_sd_db,
                          place_tau_s=float(os.environ.get(PLACE_TAU_ENV) or det.gains.p.place_tau_s))
    det.exponent.p = replace(det.exponent.p, learn=switch(LEARN_EXPONENT_ENV, det.exponent.p.learn))
    resid_bias = os.environ.get(RESID_BIAS_ENV)
    if resid_bias:
        det.hearing.p = replace(det.hearing.p, resid_bias_sd_db=float(resid_bias))
    det.beacon_fit.p = replace(det.beacon_fit.p, learn=switch(BEACON_FIT_ENV, det.beacon_fit.p.learn),
                               use_gains=switch(BEACON_GAINS_ENV, det.beacon_fit.p.use_gains))
    if os.environ.get(TRUE_EXPONENT_ENV) == "1":  # --true-exponent (a diagnostic)
        det.exponent = TrueExponent(float(sim.channel.p.path_loss_exponent))


class TrueExponent(ExponentLearner):
    """The window test's exponent set to the simulator's own (`--true-exponent`): how much of a result is the
    beacons' censoring bias (docs/bands.md, "Exponent from the bands"). Never a product option."""

    def __init__(self, n: float) -> None:
        super().__init__()
        self._n = n

    def value(self, beacon_n: float) -> float:
        return self._n


def learned_bias(pipe: BandPipeline, sim: Simulator, bad: int) -> tuple[float, float] | None:
    """What the pipeline adds to the bad receiver's levels relative to the others' median (the beacons'
    calibration plus the correction learned from bands, i.e. `gain_dev_db` of `receivers()`; the
    beacons' alone when the pipeline does not report it), and what it should add (the true gain
    difference, sign flipped). None if the pipeline does not say."""
    try:
        health = pipe.receivers(START)
        if health:
            learned = [float(health[r]["gain_dev_db"]) for r in sim.rx_ids]
        else:
            bias = pipe.calibration()["rx_bias_db"]
            learned = [float(bias[r]) for r in sim.rx_ids]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    gain = sim.channel.rx_gain
    others = [i for i in range(len(learned)) if i != bad]
    return (learned[bad] - float(np.median([learned[i] for i in others])),
            -(float(gain[bad]) - float(np.median(gain[others]))))


def gain_errors(pipe: BandPipeline, sim: Simulator) -> list[float]:
    """Per receiver: the correction the pipeline adds to its stored levels (`gain_dev_db`, beacons + bands) minus
    the true one, -(hardware gain + configured offset); [] if the pipeline does not report it."""
    try:
        health = pipe.receivers(START)
        learned = np.array([float(health[r]["gain_dev_db"]) for r in sim.rx_ids])
    except (AttributeError, KeyError, TypeError, ValueError):
        return []
    off = np.array([float(pipe.tracker.rx_offset[pipe.tracker.rx_ids.index(r)]) for r in sim.rx_ids])
    return [float(v) for v in learned + np.asarray(sim.channel.rx_gain) + off]


def gain_rows(results: list[RunResult]) -> tuple[list[str], list[list[str]]]:
    """Learned minus true receiver gain per run: the part all receivers share (a site-wide offset, which the
    band powers absorb) and each receiver's own error beyond it, with its RMS and largest."""
    cols = ["run", "layout", "radio", "σ", "shared dB", "RMS dB", "max |err| dB", "per receiver (err − shared)"]
    rows = []
    for r in results:
        if not r.rx_gain_err:
            continue
        e = np.array(r.rx_gain_err)
        own = e - float(np.median(e))
        rows.append([str(r.seed), r.layout, r.channel.radio + (f" {r.channel.bad}" if r.channel.bad else ""),
                     f"{r.channel.sigma:g}", f"{float(np.median(e)):+.1f}", f"{float(np.sqrt(np.mean(own**2))):.2f}",
                     f"{float(np.abs(own).max()):.1f}",
                     " ".join(f"{i}{v:+.1f}" for i, v in zip(r.rx_ids, own.tolist(), strict=True))])
    return cols, rows


def null_window(e: Escape | None, duration: float, rules_clear: float) -> list[tuple[float, float]]:
    """Spans (s since start) during which a band counts as a null band: any breach there is false."""
    if e is None:
        return [(0.0, duration)]
    spans = [(0.0, e.cross_at)]
    if e.reentry_at is not None and e.reentry_at + rules_clear + 60.0 < duration:
        spans.append((e.reentry_at + rules_clear + 60.0, duration))
    return spans


def score(res: RunResult, site: SiteConfig, escapes: list[Escape], raised: dict[int, list[float]],
          cleared: dict[int, list[float]], duration: float) -> None:
    rules = site.rules
    by_band = {e.band: e for e in escapes}
    for b in site.bands:
        e = by_band.get(b.id)
        spans = null_window(e, duration, rules.clear_dwell_s)
        res.band_hours += sum(t1 - t0 for t0, t1 in spans) / 3600.0
        for t in raised.get(b.id, []):
            if any(t0 <= t < t1 for t0, t1 in spans):
                res.false_ts.append(t)
                res.false_bands.append(b.id)
        if e is None:
            continue
        end = e.reentry_at if e.reentry_at is not None else duration
        hits = [t for t in raised.get(b.id, []) if e.cross_at <= t <= end + rules.clear_dwell_s + 60.0]
        first = min(hits) if hits else None
        clear = None
        if e.reentry_at is not None and first is not None:
            after = [t for t in cleared.get(b.id, []) if t >= first]
            clear = (min(after) - e.reentry_at) if after else math.inf
        res.escapes.append({
            "kind": e.kind, "how": e.how, "cross_at": e.cross_at, "out_m": e.out_m, "wander": e.wander,
            "reentry_at": e.reentry_at,
            "latency": None if first is None else first - e.cross_at,
            "caught": first is not None and first - e.cross_at <= rules.breach_dwell_s + 30.0,
            "clear_latency": clear, "deadline": rules.breach_dwell_s + 30.0, "clear_target": rules.clear_dwell_s + 20.0,
        })


def score_ideal(res: RunResult, obs: IdealObserver, escapes: list[Escape], duration: float) -> None:
    """Keep the ideal observer's statistics: null maxima per band-window, escape traces (threshold later)."""
    by_band = {e.band: e for e in escapes}
    rules_clear = 10.0
    for v in VARIANTS:
        res.ideal_null[v] = []
        res.ideal_escape[v] = []
    hours = 0.0
    for i, band in enumerate(obs.band_ids):
        e = by_band.get(band)
        spans = null_window(e, duration, rules_clear)
        for t0, t1 in spans:
            hours += (t1 - t0) / 3600.0
            for v in VARIANTS:
                res.ideal_null[v].append(obs.window_series(v, i, t0, t1))
        if e is not None:
            for v in VARIANTS:
                res.ideal_escape[v].append(obs.window_series(v, i, e.cross_at, e.cross_at + obs.dwell_s + 30.0 + 1e-6))
    res.ideal_null_hours = hours


# -- tables -------------------------------------------------------------------------------------------
def poisson_upper(n: int, conf: float = 0.95) -> float:
    """Exact one-sided upper confidence bound of a Poisson mean after observing n events."""
    lo, hi = 0.0, max(10.0, 4.0 * n + 10.0)
    target = 1.0 - conf
    for _ in range(100):
        mid = (lo + hi) / 2
        # P(X <= n; mid), summed in log space
        terms = [k * math.log(mid) - mid - math.lgamma(k + 1) for k in range(n + 1)] if mid > 0 else [0.0]
        cdf = sum(math.exp(t) for t in terms)
        lo, hi = (mid, hi) if cdf > target else (lo, mid)
    return (lo + hi) / 2


def rate(n: int, bh: float) -> str:
    if bh <= 0:
        return "-"
    return f"{100 * n / bh:.2f} (≤{100 * poisson_upper(n) / bh:.2f})"


def frac(k: int, n: int) -> str:
    return f"{k}/{n}" if n else "-"


def max_in_window(ts: Iterable[float], window: float = 600.0) -> int:
    s = sorted(ts)
    best, j = 0, 0
    for i, t in enumerate(s):
        while s[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def previous_ideal(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """The ideal observer's cells of an earlier run's markdown recall table, by (layout, radio, σ).

    The ideal observer does not depend on the detector, and the same seeds give the same observations,
    so a re-run of the software alone (`--no-ideal --ideal-from FILE`) can be set beside them.
    """
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        if not line.startswith("**Recall within"):
            continue
        head = [c.strip() for c in lines[k + 2].strip("|").split("|")]
        for row in lines[k + 4:]:
            if not row.startswith("|"):
                break
            cells = dict(zip(head, [c.strip() for c in row.strip("|").split("|")], strict=False))
            out[(cells["layout"], cells["radio"], cells["σ"])] = {c: v for c, v in cells.items() if "ideal" in c
                                                                 or c == "escapes"}
    return out


def recall_rows(results: list[RunResult], kinds: Sequence[str], thresholds: dict[tuple[str, str, str], float],
                ideal: bool, prev: dict[tuple[str, str, str], dict[str, str]] | None = None,
                ) -> tuple[list[str], list[list[str]]]:
    cols = ["layout", "radio", "σ", "escapes", *[f"sw {k}" for k in kinds], "sw fence/gate", "sw all",
            "latency p50/p95 s"]
    if ideal or prev:
        cols += [f"ideal {v}" for v in VARIANTS] + [f"gap vs {v}" for v in VARIANTS]
    cols += ["returns cleared ≤ clear_dwell+20 s", "clear p50/max s"]
    rows: list[list[str]] = []
    for key, group in _groups(results):
        layout, radio, sigma = key
        esc = [e for r in group for e in r.escapes]
        caught = [e for e in esc if e["caught"]]
        row = [layout, radio, f"{sigma:.0f}", str(len(esc))]
        for k in kinds:
            ek = [e for e in esc if e["kind"] == k]
            row.append(frac(sum(e["caught"] for e in ek), len(ek)))
        row.append("/".join(frac(sum(e["caught"] for e in esc if e["how"] == h),
                                 sum(1 for e in esc if e["how"] == h)) for h in HOWS))
        row.append(f"{frac(len(caught), len(esc))} ({100 * len(caught) / max(len(esc), 1):.0f} %)")
        lat = [e["latency"] for e in caught]
        row.append(f"{np.percentile(lat, 50):.0f}/{np.percentile(lat, 95):.0f}" if lat else "-")
        own = any(r.ideal_escape for r in group)
        if prev is not None and not own:
            cells = prev.get((layout, radio, f"{sigma:.0f}"), {})
            same = cells.get("escapes") == str(len(esc))
            got = [cells.get(f"ideal {v}", "-") if same else "-" for v in VARIANTS]
            row += got
            row += [f"{len(caught) - int(g.split('/')[0]):+d}" if "/" in g else "-" for g in got]
        elif ideal and not own:
            row += ["-"] * (2 * len(VARIANTS))
        if ideal and own:
            thr_key = (layout, radio)
            ideal_caught = {}
            for v in VARIANTS:
                thr = thresholds.get((*thr_key, v), math.inf)
                traces = [t for r in group for t in r.ideal_escape.get(v, [])]
                ideal_caught[v] = sum(first_crossing(t, thr) is not None for t in traces)
                row.append(f"{frac(ideal_caught[v], len(traces))}")
            for v in VARIANTS:
                row.append(f"{len(caught) - ideal_caught[v]:+d}")
        ret = [e for e in esc if e["clear_latency"] is not None]  # came back after a raised breach
        ok = [e for e in ret if e["clear_latency"] <= e["clear_target"]]
        row.append(frac(len(ok), len(ret)))
        cl = [e["clear_latency"] for e in ret if math.isfinite(e["clear_latency"])]
        never = len(ret) - len(cl)
        spread = f"{np.percentile(cl, 50):.0f}/{max(cl):.0f}" if cl else "-"
        row.append(spread + (f", {never} never" if never else ""))
        rows.append(row)
    return cols, rows


def _groups(results: list[RunResult]) -> list[tuple[tuple[str, str, float], list[RunResult]]]:
    out: dict[tuple[str, str, float], list[RunResult]] = {}
    for r in results:
        out.setdefault((r.layout, r.channel.radio, r.channel.sigma), []).append(r)
    return sorted(out.items(), key=lambda kv: (list(BREACH_LAYOUTS).index(kv[0][0]), kv[0][1], kv[0][2]))


def null_rows(results: list[RunResult], by: Callable[[RunResult], tuple[str, ...]],
              head: list[str]) -> tuple[list[str], list[list[str]]]:
    cols = [*head, "runs", "band-h", "false breaches", "per 100 bh (95 % upper)", "max in 10 min", "CPU s", "φ at end",
            "misfit at end"]
    if any(r.bad_rx_bias is not None for r in results):
        cols.append("bad rx: learned / true dB, state")
    groups: dict[tuple[str, ...], list[RunResult]] = {}
    for r in results:
        groups.setdefault(by(r), []).append(r)
    rows = []
    for key in sorted(groups):
        g = groups[key]
        n = sum(len(r.false_ts) for r in g)
        bh = sum(r.band_hours for r in g)
        burst = max(max_in_window(r.false_ts) for r in g)
        row = [*key, str(len(g)), f"{bh:.1f}", str(n), rate(n, bh), str(burst), f"{sum(r.cpu_s for r in g):.0f}",
               ", ".join(f"{getattr(r, 'null_scale', 1.0):.2f}" for r in g),  # (older --load files have none)
               f"{sum(getattr(r, 'null_misfit', False) for r in g)} of {len(g)}"]
        if len(cols) > len(row):
            row.append(", ".join(f"{b[0]:+.1f} / {b[1]:+.1f} {r.bad_rx_state or '-'}" for r in g
                                 if (b := r.bad_rx_bias) is not None) or "-")
        rows.append(row)
    return cols, rows


def show(con: Console, title: str, cols: list[str], rows: list[list[str]], md: list[str]) -> None:
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    con.print(t)
    md += [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md.append("")


# -- main ---------------------------------------------------------------------------------------------
def _run(args: tuple[Any, ...]) -> RunResult:
    return simulate(*args)


def run_all(jobs: list[tuple[Any, ...]], workers: int, con: Console, label: str) -> list[RunResult]:
    if not jobs:
        return []
    t0 = time.perf_counter()
    out: list[RunResult] = []
    if workers <= 1:
        out = [_run(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for k, r in enumerate(ex.map(_run, jobs, chunksize=1)):
                out.append(r)
                if (k + 1) % max(len(jobs) // 10, 1) == 0:
                    con.print(f"  {label}: {k + 1}/{len(jobs)} runs, {time.perf_counter() - t0:.0f} s")
    con.print(f"{label}: {len(jobs)} runs in {time.perf_counter() - t0:.0f} s wall, "
              f"{sum(r.cpu_s for r in out):.0f} s CPU")
    return out


def run_phases(a: argparse.Namespace, layouts: list[str], radios: list[str], sigmas: list[float],
               null_sigmas: list[float], kinds: list[str], bads: list[str], ideal_layouts: list[str],
               con: Console) -> tuple[list[RunResult], list[RunResult], list[RunResult]]:
    """Recall runs, null runs, bad-receiver runs (each a pool of independent processes)."""
    recall_jobs = [(lay, _channel(a, radio, sigma), a.seed + 100 * k + int(sigma), a.duration,
                    a.bands, a.escapes, kinds, not a.no_ideal and (not ideal_layouts or lay in ideal_layouts))
                   for lay in layouts for radio in radios for sigma in sigmas for k in range(a.seeds)]
    recall = run_all(recall_jobs, a.jobs, con, "recall runs")
    null_jobs = []
    for radio in radios:
        per_run = a.null_bands * a.null_duration / 3600.0
        n_runs = max(math.ceil(a.null_hours / per_run), 1) if a.null_hours > 0 else 0
        for k in range(n_runs):
            lay, sigma = layouts[k % len(layouts)], null_sigmas[(k // len(layouts)) % len(null_sigmas)]
            null_jobs.append((lay, _channel(a, radio, sigma), a.seed + 50_000 + k, a.null_duration,
                              a.null_bands, 0, kinds, False))
    null = run_all(null_jobs, a.jobs, con, "null runs")
    bad_jobs = [(lay, _channel(a, radio, 6.0, bad), a.seed + 90_000 + k, a.bad_duration, a.null_bands, 0,
                 kinds, False)
                for k, (lay, radio, bad) in enumerate((lay, radio, bad) for lay in layouts for radio in radios
                                                      for bad in bads)]
    badr = run_all(bad_jobs, a.jobs, con, "bad-receiver runs")
    return recall, null, badr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few minutes: demo + compound, σ 6, small null runs")
    ap.add_argument("--layouts", default=",".join(DEFAULT_BREACH_LAYOUTS))
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--sigmas", default="4,6,8")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seeds", type=int, default=2, help="recall runs per layout × radio × σ")
    ap.add_argument("--escapes", type=int, default=16, help="escapees per recall run (kinds × gate/fence cycled)")
    ap.add_argument("--bands", type=int, default=48, help="bands per recall run (the rest walk or stand)")
    ap.add_argument("--duration", type=float, default=660.0, help="seconds per recall run")
    ap.add_argument("--null-hours", type=float, default=2000.0, help="band-hours of null runs per radio")
    ap.add_argument("--null-bands", type=int, default=100)
    ap.add_argument("--null-duration", type=float, default=1800.0)
    ap.add_argument("--null-sigma", default="4,6,8", help="σ of the null runs (cycled)")
    ap.add_argument("--bad", default="gain-6,gain-4,deaf-85", help="bad-receiver runs ('' = none)")
    ap.add_argument("--bad-duration", type=float, default=1800.0)
    ap.add_argument("--budget", type=float, default=0.5, help="false alarms per 100 band-hours for the ideal observer")
    ap.add_argument("--loss", type=float, default=0.15)
    ap.add_argument("--gains", type=float, default=2.0, help="hidden receiver and band gain spread, ± dB (uniform)")
    ap.add_argument("--band-gains", type=float, default=None,
                    help="hidden band power spread, ± dB, when not --gains (then --gains is the receivers' alone; "
                         "the ideal observer's band-gain prior stays --gains)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-ideal", action="store_true")
    ap.add_argument("--md", type=Path, help="also write the markdown tables here")
    ap.add_argument("--ideal-from", type=Path, help="rows without their own ideal observer take its cells from an "
                    "earlier --md file of the same seeds and layouts (it does not depend on the detector)")
    ap.add_argument("--ideal-layouts", default="", help="run the ideal observer on these layouts only ('' = all)")
    ap.add_argument("--save", type=Path, help="pickle every run's results here (re-render with --load)")
    ap.add_argument("--load", type=Path, action="append", help="render the tables of a --save file instead of "
                    "running (repeat it to pool several files, e.g. batches of null runs with different --seed)")
    ap.add_argument("--seed", type=int, default=16_000)
    ap.add_argument("--learn-band-gains", action=argparse.BooleanOptionalAction, default=None,
                    help="the band-gain learner on or off (edge/bands/band_gain.py; default: the product's, on)")
    ap.add_argument("--cross-after", type=float, default=90.0,
                    help="escapes cross no earlier than this (s into the run; give --duration to fit): the escapee's "
                         "band is a resident until then, as on a site that has run for hours")
    ap.add_argument("--band-gain-min-sd", type=float, default=None,
                    help="the band-gain learner's sd floor, dB (default: the product's, 1 dB; 2 = the prior's, i.e. "
                         "the mean alone is learned); narrower is used only while the beacons' misfit is low")
    ap.add_argument("--band-gain-place-tau", type=float, default=None,
                    help="keep each look's gain evidence under the cell of the band's tracker fixes averaged over this "
                         "many seconds (GainParams.place_tau_s; default: the product's, 0 = the fit's best point)")
    ap.add_argument("--resid-bias-sd", type=float, default=None,
                    help="the band residuals' receiver-gain estimate is never surer than this, dB (HearingParams."
                         "resid_bias_sd_db; default: the product's, 2; 0 = before session 22)")
    ap.add_argument("--true-exponent", action="store_true",
                    help="diagnostic: the window test uses the simulator's true path-loss exponent, not the beacons'")
    ap.add_argument("--band-gain-inside", action="store_true",
                    help="the band-gain learner looks only at confidently-inside windows, over inside positions")
    ap.add_argument("--learn-exponent", action=argparse.BooleanOptionalAction, default=None,
                    help="turn the exponent learner on (edge/bands/window_exponent.py, off by default)")
    ap.add_argument("--beacon-fit", action=argparse.BooleanOptionalAction, default=None,
                    help="the window test's exponent from the censored beacon fit (edge/bands/beacon_exponent.py; "
                         "default: the product's, on); --no-beacon-fit: the linear calibration's")
    ap.add_argument("--beacon-fit-gains", action=argparse.BooleanOptionalAction, default=None,
                    help="the window test's receiver gains from the censored beacon fit too (default: the product's, "
                         "on); --no-beacon-fit-gains: the linear calibration's, solved at its own exponent")
    a = ap.parse_args(argv)
    # Read by each run (`apply_variant`, `simulate`), in the worker processes too.
    for flag, env in ((a.learn_band_gains, LEARN_ENV), (a.band_gain_inside, GAIN_INSIDE_ENV),
                      (a.learn_exponent, LEARN_EXPONENT_ENV), (a.true_exponent, TRUE_EXPONENT_ENV),
                      (a.beacon_fit, BEACON_FIT_ENV), (a.beacon_fit_gains, BEACON_GAINS_ENV)):
        if flag is not None:  # None: the product's default
            os.environ[env] = "1" if flag else "0"
    if a.band_gain_min_sd is not None:
        os.environ[MIN_SD_ENV] = str(a.band_gain_min_sd)
    if a.band_gain_place_tau is not None:
        os.environ[PLACE_TAU_ENV] = str(a.band_gain_place_tau)
    if a.resid_bias_sd is not None:
        os.environ[RESID_BIAS_ENV] = str(a.resid_bias_sd)
    if a.cross_after != 90.0:
        os.environ[CROSS_AFTER_ENV] = str(a.cross_after)
    if a.quick:
        a.layouts, a.sigmas, a.seeds, a.bad = "demo,compound", "6", 1, "gain-6"
        a.null_hours, a.null_duration, a.null_sigma, a.bad_duration = 50.0, 600.0, "6", 600.0
    try:
        layouts = [x for x in a.layouts.split(",") if x]
        radios = [x for x in a.radios.split(",") if x]
        sigmas = [float(x) for x in a.sigmas.split(",") if x]
        null_sigmas = [float(x) for x in a.null_sigma.split(",") if x]
        kinds = [x for x in a.kinds.split(",") if x]
        bads = [x for x in a.bad.split(",") if x]
        ideal_layouts = [x for x in a.ideal_layouts.split(",") if x]
        for lay in layouts:
            if lay not in BREACH_LAYOUTS:
                raise ValueError(f"unknown layout {lay!r}; allowed: {', '.join(BREACH_LAYOUTS)}")
        for r in radios:
            if r not in ("default", "alt"):
                raise ValueError(f"unknown radio {r!r}; allowed: default, alt")
        for k in kinds:
            if k not in KINDS:
                raise ValueError(f"unknown escape kind {k!r}; allowed: {', '.join(KINDS)}")
        for b in bads:
            if b not in BAD_KINDS:
                raise ValueError(f"unknown bad receiver {b!r}; allowed: {', '.join(BAD_KINDS)}")
        if not all(math.isfinite(v) and 0 < v <= 20 for v in sigmas + null_sigmas):
            raise ValueError("σ must be within 0..20 dB")
        spreads = [a.gains] + ([] if a.band_gains is None else [a.band_gains])
        if not all(math.isfinite(v) and 0 <= v <= 20 for v in spreads):
            raise ValueError("gain spreads must be within 0..20 dB")
    except ValueError as exc:
        print(f"bands_breach: {exc}", file=sys.stderr)
        return 2
    con = Console(width=250)
    load = os.getloadavg()
    con.print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, load {load[0]:.1f}/{load[1]:.1f}, python "
              f"{platform.python_version()}, jobs {a.jobs}, loss {a.loss:.0%}, gains ±{a.gains:g} dB"
              + ("" if a.band_gains is None else f", band powers ±{a.band_gains:g} dB"))
    t_all = time.perf_counter()
    md: list[str] = []
    if a.load is not None:
        recall: list[RunResult] = []
        null: list[RunResult] = []
        badr: list[RunResult] = []
        for path in a.load:
            with path.open("rb") as fh:
                parts = pickle.load(fh)  # our own file, written by --save
            recall, null, badr = recall + parts[0], null + parts[1], badr + parts[2]
    else:
        recall, null, badr = run_phases(a, layouts, radios, sigmas, null_sigmas, kinds, bads, ideal_layouts, con)
    if a.save is not None:
        with a.save.open("wb") as fh:
            pickle.dump((recall, null, badr), fh)
    thresholds: dict[tuple[str, str, str], float] = {}
    if any(r.ideal_escape for r in recall):
        cols = ["layout", "radio", "variant", "null band-h", "threshold 2·lnΛ", "how"]
        rows = []
        for lay in layouts:
            for radio in radios:
                group = [r for r in recall if r.layout == lay and r.channel.radio == radio]
                hours = sum(r.ideal_null_hours for r in group)
                for v in VARIANTS:
                    series = [s for r in group for s in r.ideal_null.get(v, [])]
                    thr, how = calibrate_threshold(series, hours, a.budget)
                    thresholds[(lay, radio, v)] = thr
                    rows.append([lay, radio, v, f"{hours:.0f}", f"{thr:.1f}", how])
        show(con, f"Ideal observer thresholds (budget {a.budget:g} per 100 band-hours, from the recall runs' null "
                  "bands)", cols, rows, md)
    if recall:
        prev = previous_ideal(a.ideal_from) if a.ideal_from is not None else None
        cols, rows = recall_rows(recall, kinds, thresholds, any(r.ideal_escape for r in recall), prev)
        show(con, f"Recall within breach_dwell_s + 30 s (software = BandPipeline on main; {a.seeds} runs × "
                  f"{a.escapes} escapes per row, loss {a.loss:.0%}, gains ±{a.gains:g} dB)", cols, rows, md)
        cols, rows = null_rows(recall, lambda r: (r.layout, r.channel.radio), ["layout", "radio"])
        show(con, "False breaches in the recall runs (walkers, fence-standers, escapees before crossing)",
             cols, rows, md)
    if null:
        cols, rows = null_rows(null, lambda r: (r.channel.radio, r.layout), ["radio", "layout"])
        _cols2, rows2 = null_rows(null, lambda r: (r.channel.radio,), ["radio"])
        _cols3, rows3 = null_rows(null, lambda r: (r.channel.radio, f"σ {r.channel.sigma:g}"), ["radio", "layout"])
        show(con, f"False breaches, null runs ({a.null_bands} bands × {a.null_duration:.0f} s per run, 2/3 walkers, "
                  f"1/3 standing 0.5–3 m inside a fence, σ {a.null_sigma}, start-ups included)",
             cols, rows + rows3 + [[*r[:1], "all", *r[1:]] for r in rows2], md)
    if badr:
        cols, rows = null_rows(badr, lambda r: (r.layout, r.channel.radio, r.channel.bad or ""),
                               ["layout", "radio", "bad receiver"])
        show(con, f"One bad inside receiver (σ 6 dB, {a.null_bands} bands × {a.bad_duration:.0f} s per run)",
             cols, rows, md)
    cols, rows = gain_rows(recall + null + badr)
    if rows:
        show(con, "Receiver gains learned minus true at the end of each run (beacons + bands; dB)", cols, rows, md)
    cols = ["radio", "σ dB", "distance m", "heard: sampled", "modelled", "mean heard dBm: sampled", "modelled"]
    rows = []
    for radio in radios:
        channel = check_channel(radio_params(layout_site("demo", 1), Channel(radio, 6.0, a.loss, a.gains)), a.seed)
        for d, h_s, h_m, m_s, m_m in model_check(channel, float(channel.rx_gain[0]), float(BAND_POWER_DBM)):
            rows.append([radio, "6", f"{d:.0f}", f"{h_s:.3f}", f"{h_m:.3f}", f"{m_s:.1f}", f"{m_m:.1f}"])
    show(con, "Model check: the simulator's channel against the ideal observer's model (3,000 adverts per distance, "
              "10 s apart, random bearings)", cols, rows, md)
    con.print(f"total {time.perf_counter() - t_all:.0f} s wall")
    if a.md is not None:
        a.md.write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
