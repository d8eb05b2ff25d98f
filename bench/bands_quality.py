"""Wristband pipeline quality on simulated scenarios (issue 3, benchmark 1).

Runs the full pipeline (verify → track → rules) over simulator output for three layouts of the
demo site ("good" = demo-site.yaml, "perimeter" = receivers on a ring 15 m out, "fence-line"),
shadowing σ = 2/4/6/8 dB and 0/20/40 % base packet loss. People walk, stand 0.5-3 m inside the
fence, escape (through the gate, 20 m over the outer fence, out of radio range) and one band goes
silent. Beside qwatch it runs the issue's ideal observer (`bands_ideal.py`: true channel,
inside-vs-outside likelihood ratio on the same observations) and "qwatch, true gains" (the
pipeline fed RSSI corrected by the true receiver gains and band powers).

Usage: .venv/bin/python -m bench.bands_quality [--duration S] [--grid L,..] [--target L,..]
       [--fa-runs N] [--no-observer] [--baseline] [--ablate support,calvar,silence] [--plots DIR]
       [--radio default|alt] [--fa-standers RUNS --fa-bands N --fa-layout L,..]
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.bands_ideal import WindowObserver as IdealObserver
from edge.bands.pipeline import BandPipeline
from edge.bands.rules import RuleParams
from edge.bands.silence import SilenceParams
from edge.bands.tracker import TrackerParams
from edge.sim import RadioParams, Simulator
from edge.sim.keys import site_demo_keys
from edge.sim.radio_alt import AltRadioParams
from edge.sim.scenarios import Scenario, escape, standing_near_fence, walking, with_events
from edge.sim.simulator import BAND_POWER_DBM
from protocols.site_config import SiteConfig, load_site_config

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"good": ROOT / "config/examples/demo-site.yaml", "perimeter": ROOT / "config/examples/perimeter-site.yaml",
           "fence-line": ROOT / "config/examples/fenceline-site.yaml"}


@dataclass
class Result:
    layout: str
    sigma: float
    loss: float
    ideal: bool
    escapes: int = 0
    detected: int = 0
    by_how: dict[str, list[int]] = field(default_factory=dict)  # how -> [detected in time, total]
    range_missing: int = 0  # range escapes that raised band_missing (the physically possible alert)
    delays: list[float] = field(default_factory=list)
    false_breaches: int = 0
    band_hours: float = 0.0
    missing_delays: list[float] = field(default_factory=list)
    loc_err: list[float] = field(default_factory=list)
    ideal_run: bool = False  # the ideal observer ran on the same observations
    ideal_by_how: list[dict[str, list[int]]] = field(default_factory=lambda: [{}, {}])  # per LR threshold
    ideal_false: list[int] = field(default_factory=lambda: [0, 0])


HOW: dict[int, str] = {}
RADIO = "default"  # --radio: the simulator's channel model ("default" or "alt", edge/sim/radio_alt.py)
BASELINE = False  # --baseline: the pipeline before this round's changes (make_pipeline), for before/after
ABLATE: list[str] = []  # --ablate: switch single changes off
RULE_OVERRIDES: dict[str, float] = {}  # --rule KEY=VALUE: RuleParams overrides, for tuning experiments
IDEAL_THRESHOLDS = (9.0, 4.0)  # the ideal observer's per-tick 2·ln(likelihood ratio) thresholds


def make_pipeline(site: SiteConfig, keys: dict[int, bytes]) -> BandPipeline:
    """The pipeline under test; --baseline / --ablate switch this round's changes off for a same-run before/after.

    Changes (2026-11-28, bands.md): "support" = the breach dwell needs current evidence, the CUSUM drift 1.0
    and the still-band weight (the rule changes), "calvar" = the
    calibration's posterior variance in every link's σ, "silence" = silence at live receivers as evidence.
    """
    off = set(ABLATE) | ({"support", "calvar", "silence"} if BASELINE else set())
    before = {"support_chi2": 0.0, "evidence_drift": 0.5, "still_weight": 1.0}  # the earlier rules
    overrides: dict[str, float] = {**RULE_OVERRIDES, **(before if "support" in off else {})}
    rules = RuleParams.from_rules(site.rules, **overrides)
    tracker = TrackerParams(calibration_budget_db=None) if "calvar" in off else None
    return BandPipeline(site, keys, node="bench", rule_params=rules, tracker_params=tracker,
                        silence_params=None if "silence" in off else SilenceParams())


def scenario(site: SiteConfig, seed: int, duration: float, escapes: bool) -> tuple[Scenario, dict[int, float], int]:
    sc = walking(site, seed)
    ids = [b.id for b in site.bands]
    rng = np.random.default_rng(seed)
    crossings: dict[int, float] = {}
    for i, b in enumerate(ids):
        if i % 3 == 1:
            sc.scripts[b] = standing_near_fence(site, b, seed, float(rng.uniform(0.5, 3.0)))
    silent = ids[2]
    if escapes:
        hows = ["gate", "fence", "range"]
        for k, b in enumerate(ids[3:3 + 3 * max(int(duration // 400), 1)]):
            cross = 90.0 + (k * 97.0) % max(duration - 200.0, 60.0)
            sc.scripts[b] = escape(site, b, seed, cross_at=cross, how=hows[k % 3], out_m=20.0)
            crossings[b] = cross
            HOW[b] = hows[k % 3]
    base = sc.script(silent, sc.default)  # type: ignore[arg-type]
    sc.scripts[silent] = with_events(base, silent=((duration / 2, 1e12),))
    return sc, crossings, silent


def run(layout: str, sigma: float, loss: float, *, seed: int, duration: float, ideal: bool = False,
        escapes: bool = True, observer: bool = False) -> Result:
    site = load_site_config(LAYOUTS[layout])
    site = site.model_copy(update={"radio": site.radio.model_copy(update={"shadowing_db": sigma})})
    keys = site_demo_keys(site)
    sc, crossings, silent = scenario(site, seed, duration, escapes)
    start = 1_700_000_000.0
    radio: RadioParams | AltRadioParams = (
        AltRadioParams.like(sigma, loss) if RADIO == "alt" else
        RadioParams(path_loss_exponent=site.radio.path_loss_exponent, shadowing_db=sigma, base_loss=loss))
    sim = Simulator(site, keys, seed=seed, start_ts=start, scenario=sc, radio=radio)
    pipe = make_pipeline(site, keys)
    rx_gain = dict(zip(sim.rx_ids, sim.channel.rx_gain.tolist(), strict=True))
    tx_err = dict(zip(sim.band_ids + sim.beacon_ids, sim.channel.tx_power_err.tolist(), strict=True))
    res = Result(layout, sigma, loss, ideal, ideal_run=observer)
    obs_ideal = (IdealObserver(site, sim.channel, sim.band_ids, sim.rx_ids, BAND_POWER_DBM, thresholds=IDEAL_THRESHOLDS)
                 if observer else None)
    rules = site.rules
    alerts = []
    for s in range(1, int(duration) + 1):
        now = start + s
        for o in sim.advance(now):
            rssi = o.rssi
            if obs_ideal is not None:
                obs_ideal.observe(o.ts, o.rx, o.rssi, int.from_bytes(o.data[1:5], "little"))
            if ideal:
                band = int.from_bytes(o.data[1:5], "little")
                rssi = round(rssi - rx_gain[o.rx] - tx_err.get(band, 0.0))
            alerts += pipe.observe(o.ts, o.rx, rssi, o.company_id, o.data)
        alerts += pipe.tick(now)
        if obs_ideal is not None:
            obs_ideal.tick(now, rules.breach_dwell_s, rules.clear_dwell_s)
        if s % 5 == 0 and s > 20:
            truth = sim.truth(now)
            for b, (x, y) in truth.items():
                f = pipe.fix(b)
                if f is not None and f.ts == now and b not in crossings:
                    res.loc_err.append(float(np.hypot(f.x - x, f.y - y)))
    score(res, site, alerts, crossings, silent, start, duration)
    if obs_ideal is not None:
        for which in range(len(IDEAL_THRESHOLDS)):
            score_ideal(res, which, site, obs_ideal.raises(which), crossings, start)
    return res


def score_ideal(res: Result, which: int, site: SiteConfig, raises: list[tuple[int, float]],
                crossings: dict[int, float], start: float) -> None:
    """Recall and false breaches of the ideal observer, scored exactly like qwatch's alerts."""
    first: dict[int, float] = {}
    for band, ts in raises:
        if band in crossings and ts - start >= crossings[band]:
            first.setdefault(band, ts - start)
        else:
            res.ideal_false[which] += 1
    for b, cross in crossings.items():
        tally = res.ideal_by_how[which].setdefault(HOW.get(b, "?"), [0, 0])
        tally[1] += 1
        t = first.get(b)
        if t is not None and t <= cross + site.rules.breach_dwell_s + 30.0:
            tally[0] += 1


def score(res: Result, site: SiteConfig, alerts: list, crossings: dict[int, float], silent: int, start: float,
          duration: float) -> None:
    dwell = site.rules.breach_dwell_s
    first: dict[int, float] = {}
    missing_at: dict[int, float] = {}
    for a in alerts:
        band = getattr(a.subject, "band", None)
        if a.type == "geofence_breach" and a.state == "raised":
            if band in crossings and a.ts - start >= crossings[band]:
                first.setdefault(band, a.ts - start)
            else:
                res.false_breaches += 1
        if a.type == "band_missing" and a.state == "raised" and band == silent:
            res.missing_delays.append(a.ts - start - duration / 2 - site.rules.missing_after_s)
        if a.type == "band_missing" and a.state == "raised" and band in crossings:
            missing_at.setdefault(band, a.ts - start)
    for b, cross in crossings.items():
        res.escapes += 1
        how = HOW.get(b, "?")
        tally = res.by_how.setdefault(how, [0, 0])
        tally[1] += 1
        t = first.get(b)
        if t is not None and t <= cross + dwell + 30.0:
            res.detected += 1
            tally[0] += 1
            res.delays.append(t - cross - dwell)
        if how == "range" and b in missing_at:
            res.range_missing += 1
    n_normal = len(site.bands) - len(crossings)
    res.band_hours = (n_normal * duration + sum(crossings.values())) / 3600.0


def pct(v: list[float], q: float) -> str:
    return f"{np.percentile(v, q):.1f}" if v else "-"


def table(results: list[Result], title: str) -> Table:
    t = Table(title=title)
    for c in COLUMNS:
        t.add_column(c)
    for r in results:
        t.add_row(*row(r))
    return t


COLUMNS = ("layout", "σ dB", "loss", "observer", "recall (in dwell+30 s)", "gate/fence/range",
           "range: missing", "delay p50/p95 s", "false/100 bh (n)", "band-h", "missing delay p50 s",
           "loc RMSE/p95 m", "ideal LR≥9: recall (g/f/r)", "false (n)", "ideal LR≥4: recall (g/f/r)", "false (n)")


def row(r: Result) -> list[str]:
    rmse = float(np.sqrt(np.mean(np.square(r.loc_err)))) if r.loc_err else float("nan")
    hows = "/".join(f"{r.by_how.get(h, [0, 0])[0]}of{r.by_how.get(h, [0, 0])[1]}" for h in ("gate", "fence", "range"))
    rng_total = r.by_how.get("range", [0, 0])[1]
    return [r.layout, f"{r.sigma:.0f}", f"{r.loss:.0%}", "qwatch, true gains" if r.ideal else "qwatch",
            f"{r.detected}/{r.escapes}", hows, f"{r.range_missing}/{rng_total}",
            f"{pct(r.delays, 50)}/{pct(r.delays, 95)}",
            f"{100 * r.false_breaches / max(r.band_hours, 1e-9):.2f} ({r.false_breaches})", f"{r.band_hours:.1f}",
            pct(r.missing_delays, 50), f"{rmse:.1f}/{pct(r.loc_err, 95)}", *ideal_cells(r)]


def ideal_cells(r: Result) -> list[str]:
    """The ideal observer's recall per escape kind and false breaches per threshold, or dashes."""
    if not r.ideal_run:
        return ["-"] * (2 * len(IDEAL_THRESHOLDS))
    out: list[str] = []
    for which in range(len(IDEAL_THRESHOLDS)):
        hows = [r.ideal_by_how[which].get(h, [0, 0]) for h in ("gate", "fence", "range")]
        det, tot = sum(h[0] for h in hows), sum(h[1] for h in hows)
        out += [f"{det}/{tot} (" + "/".join(f"{h[0]}of{h[1]}" for h in hows) + ")",
                f"{100 * r.ideal_false[which] / max(r.band_hours, 1e-9):.2f} ({r.ideal_false[which]})"]
    return out


def markdown(results: list[Result]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def plots(results: list[Result], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for sigma in sorted({r.sigma for r in results}):
        errs = sorted(e for r in results if r.sigma == sigma and r.layout == "good" and not r.ideal for e in r.loc_err)
        if errs:
            a1.plot(errs, np.linspace(0, 1, len(errs)), label=f"σ={sigma:.0f} dB")
        delays = [d for r in results if r.sigma == sigma and r.layout == "good" and not r.ideal for d in r.delays]
        if delays:
            a2.hist(delays, bins=15, alpha=0.5, label=f"σ={sigma:.0f} dB")
    a1.set_xlabel("localisation error (m)")
    a1.set_ylabel("CDF")
    a1.set_xlim(0, 40)
    a1.legend()
    a1.set_title("good layout: localisation error CDF")
    a2.set_xlabel("breach detection delay after dwell (s)")
    a2.set_title("good layout: detection delay")
    a2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def merge(results: list[Result]) -> Result:
    """One row for several runs of the same configuration."""
    first = results[0]
    merged = Result(first.layout, first.sigma, first.loss, first.ideal, ideal_run=first.ideal_run)
    for r in results:
        merged.escapes += r.escapes
        merged.detected += r.detected
        merged.delays += r.delays
        merged.false_breaches += r.false_breaches
        merged.band_hours += r.band_hours
        merged.missing_delays += r.missing_delays
        merged.loc_err += r.loc_err
        merged.range_missing += r.range_missing
        for h, (d, n) in r.by_how.items():
            tally = merged.by_how.setdefault(h, [0, 0])
            tally[0] += d
            tally[1] += n
        for which in range(len(IDEAL_THRESHOLDS)):
            merged.ideal_false[which] += r.ideal_false[which]
            for h, (d, n) in r.ideal_by_how[which].items():
                tally = merged.ideal_by_how[which].setdefault(h, [0, 0])
                tally[0] += d
                tally[1] += n
    return merged


def fence_standers(layout: str, sigma: float, loss: float, *, seed: int, duration: float, bands: int) -> Result:
    """False-breach run: `bands` people standing 0.5–3 m inside a fence (the hard case), no escapes.

    Every band costs the same to simulate and track, and standing at the fence is where false
    breaches come from, so this buys the most band-hours of evidence per CPU second. The slow
    shadowing of a standing band is re-drawn per seed; each band's spot is random per seed.
    """
    site = load_site_config(LAYOUTS[layout])
    base = site.bands[0]
    extra = [base.model_copy(update={"id": 50_000 + i, "person": f"FA-{i}"}) for i in range(bands)]
    site = site.model_copy(update={"bands": extra,
                                   "radio": site.radio.model_copy(update={"shadowing_db": sigma})})
    keys = site_demo_keys(site)
    sc = walking(site, seed)
    rng = np.random.default_rng(seed)
    for b in site.bands:
        sc.scripts[b.id] = standing_near_fence(site, b.id, seed, float(rng.uniform(0.5, 3.0)))
    start = 1_700_000_000.0
    radio: RadioParams | AltRadioParams = (
        AltRadioParams.like(sigma, loss) if RADIO == "alt" else
        RadioParams(path_loss_exponent=site.radio.path_loss_exponent, shadowing_db=sigma, base_loss=loss))
    sim = Simulator(site, keys, seed=seed, start_ts=start, scenario=sc, radio=radio)
    pipe = make_pipeline(site, keys)
    res = Result(layout, sigma, loss, False)
    for s in range(1, int(duration) + 1):
        now = start + s
        for o in sim.advance(now):
            for a in pipe.observe(o.ts, o.rx, o.rssi, o.company_id, o.data):
                res.false_breaches += a.type == "geofence_breach" and a.state == "raised"
        for a in pipe.tick(now):
            res.false_breaches += a.type == "geofence_breach" and a.state == "raised"
    res.band_hours = bands * duration / 3600.0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per grid run")
    ap.add_argument("--grid", default=",".join(LAYOUTS), help="layouts for the σ × loss grid ('' = none)")
    ap.add_argument("--target", default="good,perimeter", help="layouts for the target-configuration runs")
    ap.add_argument("--fa-runs", type=int, default=2, help="30-min runs per target layout (even ones with escapes)")
    ap.add_argument("--plots", type=Path, default=ROOT / "docs")
    ap.add_argument("--no-observer", action="store_true", help="skip the ideal observer (same seeds: same result)")
    ap.add_argument("--baseline", action="store_true", help="the pipeline before this round's changes")
    ap.add_argument("--rule", action="append", default=[], help="RuleParams override KEY=VALUE (repeatable)")
    ap.add_argument("--ablate", default="", help="comma list of changes to switch off: support,calvar,silence")
    ap.add_argument("--fa-standers", type=int, default=0, metavar="RUNS",
                    help="false-breach runs only: RUNS × --fa-bands people standing at fences for --duration s")
    ap.add_argument("--fa-bands", type=int, default=100)
    ap.add_argument("--fa-seed", type=int, default=5000, help="first seed of the --fa-standers runs")
    ap.add_argument("--fa-layout", default="good,perimeter")
    ap.add_argument("--radio", choices=("default", "alt"), default="default",
                    help="channel model: the default one or the independent alt model (edge/sim/radio_alt.py)")
    a = ap.parse_args()
    global BASELINE, RADIO, ABLATE
    BASELINE = a.baseline
    ABLATE = [x for x in a.ablate.split(",") if x]
    RULE_OVERRIDES.update({k: float(v) for k, v in (x.split("=", 1) for x in a.rule)})
    RADIO = a.radio
    con = Console(width=240)
    con.print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
              f"radio model: {RADIO}, pipeline: {'baseline' if BASELINE else 'current'} ablate={ABLATE} "
              f"rules={RULE_OVERRIDES}")
    t0 = time.perf_counter()
    if a.fa_standers:
        fa = [merge([fence_standers(layout, 6.0, 0.2, seed=a.fa_seed + k, duration=a.duration, bands=a.fa_bands)
                     for k in range(a.fa_standers)]) for layout in a.fa_layout.split(",") if layout]
        for r in fa:
            con.print(f"{r.layout} σ=6 dB 20 %: {r.false_breaches} false breaches in {r.band_hours:.1f} band-hours "
                      f"({100 * r.false_breaches / max(r.band_hours, 1e-9):.2f} per 100 band-hours)")
        con.print(f"total {time.perf_counter() - t0:.0f} s")
        return
    grid: list[Result] = []
    for layout in [x for x in a.grid.split(",") if x]:
        for sigma in (2.0, 4.0, 6.0, 8.0):
            for loss in (0.0, 0.2, 0.4):
                # The ideal observer costs ~3× the pipeline: run it where the targets are set.
                grid.append(run(layout, sigma, loss, seed=int(sigma * 10 + loss * 100), duration=a.duration,
                                observer=sigma == 6.0 and not a.no_observer))
        grid.append(run(layout, 6.0, 0.2, seed=60, duration=a.duration, ideal=True))
    if grid:
        con.print(table(grid, f"grid: {a.duration:.0f} s per run, 30 bands, demo-site geometry"))
        print(markdown(grid))
        plots(grid, a.plots / "bands_quality.png")
    merged = [merge([run(layout, 6.0, 0.2, seed=1000 + k, duration=1800.0, escapes=(k % 2 == 0),
                         observer=not a.no_observer)
                     for k in range(a.fa_runs)]) for layout in a.target.split(",") if layout]
    if merged:
        con.print(table(merged, "target configuration: σ = 6 dB, 20 % loss"))
        print(markdown(merged))
    con.print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
