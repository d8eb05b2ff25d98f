"""The breach benchmark's bound (issue 16): the ideal observer of each radio model, its threshold from the
false-alarm budget on thousands of null band-hours, and its recall on the benchmark's escapes.

The observer (`IdealGLR`) knows the generating model of the radio it runs on (`bench.ideal_model`: the
default channel's AR(1) shadowing, the alt channel's place-bound shadow, body loss, Rician fading and
bursty loss, exactly) and its true parameters: receiver gains, floors and hearing curves, the true
path-loss exponent, the advert schedule. Per band and window it computes the likelihood of every
link's adverts (heard and missed) with one position held over the window, and the generalised
likelihood ratio GLR = 2·(best outside − best inside), outside = more than 1 m beyond the allowed area.
Windows end every `EVAL_S` s and last `breach_dwell_s`, +10 s and +20 s; a 10 s window held over the
dwell covers walkers. D = the larger. Band gain variants: `true`; `pm1` (an estimate off by U(−1, 1)
dB, marginalised over ±1 dB); `unknown` (the advertised power, marginalised over the true ±2 dB prior).

It does not run the pipeline: it draws the channel itself (the simulator's own `RadioChannel` /
`AltRadioChannel` and movers: walkers, fence-standers 0.5–3 m inside a fence and the escapes of
`bench.bands_breach.build_scenario`, same seeds), so null band-hours are cheap. A false raise is an
evaluation at or above the threshold after at least `REFRACTORY_S` below. The threshold is the lowest
whose raises stay within the budget (0.5 per 100 band-hours) on the null runs of that layout × radio
(σ 4/6/8 pooled); the table states the null band-hours and the exact Poisson 95 % bound at it.

Usage: .venv/bin/python -m bench.bands_bound [--layouts ...] [--radios default,alt] [--sigmas 4,6,8]
       [--null-worlds 4] [--null-bands 100] [--null-duration 1800] [--seeds 2] [--jobs 2] [--md FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import pickle
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.bands_breach import Channel, build_scenario, poisson_upper, radio_params
from bench.ideal_model import V, Window, link_model
from edge.bands.geometry import ZoneMap, ZoneShape, as_points, grid_over, sample_region
from edge.sim.escapes import KINDS
from edge.sim.radio import RadioChannel
from edge.sim.radio_alt import AltRadioChannel, AltRadioParams
from edge.sim.scenarios import walking
from edge.sim.simulator import BAND_POWER_DBM
from edge.sim.sites import BREACH_LAYOUTS, DEFAULT_BREACH_LAYOUTS, layout_site
from protocols.site_config import SiteConfig

F64 = NDArray[np.float64]
VARIANTS = ("true", "pm1", "unknown")
EVAL_S = 10.0
SHORT_S = 10.0
REFRACTORY_S = 20.0
START = 1_700_000_000.0


# -- the world: channel, movers, every advert -----------------------------------------------------------
@dataclass
class World:
    """Every advert of B bands: send times (B, N) since start, heard (B, N, R), rounded RSSI (B, N, R)."""

    site: SiteConfig
    channel: RadioChannel | AltRadioChannel
    ts: F64
    heard: NDArray[np.bool_]
    x: F64
    band_ids: list[int]


def simulate_world(site: SiteConfig, ch: Channel, seed: int, scripts: dict[int, Any], duration: float) -> World:
    """Draw the channel and every advert of the scripted bands (the simulator's channel and movers)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x1D])
    params = radio_params(site, ch)
    rx_pos = np.array([r.position for r in site.receivers], dtype=np.float64)
    rx_off = np.array([r.rssi_offset for r in site.receivers], dtype=np.float64)
    bands = list(scripts)
    n = len(bands)
    channel: RadioChannel | AltRadioChannel
    if isinstance(params, AltRadioParams):
        channel = AltRadioChannel(params, rx_pos, rx_off, n, rng, n_bands=n)
    else:
        channel = RadioChannel(params, rx_pos, rx_off, n, rng)
    interval = np.asarray(getattr(channel, "interval_factor", np.ones(n)))
    n_adv = int(duration / interval.min()) + 2
    steps = interval[:, None] + rng.uniform(0, 0.01, (n, n_adv))
    ts = rng.uniform(0, 1.0, n)[:, None] + np.cumsum(steps, axis=1) - steps[:, :1]
    heard = np.zeros((n, n_adv, len(rx_pos)), dtype=bool)
    x = np.zeros((n, n_adv, len(rx_pos)))
    idx = np.arange(n, dtype=np.int64)
    power = np.full(n, float(BAND_POWER_DBM))
    movers = [scripts[b].mover for b in bands]
    for k in range(n_adv):
        t = ts[:, k]
        pos = np.array([m.position(float(tt)) for m, tt in zip(movers, t, strict=True)])
        rssi, ok = channel.transmit(idx, START + t, power, pos)
        heard[:, k] = ok
        x[:, k] = -np.round(-rssi)
    return World(site, channel, ts, heard, x, bands)


# -- the observer ---------------------------------------------------------------------------------------
class IdealGLR:
    """GLR of one band's held position, outside vs inside, per window and band-gain variant."""

    def __init__(self, world: World, dwell_s: float, seed: int, gains_db: float, margin_m: float = 1.0) -> None:
        self.world, self.dwell_s = world, dwell_s
        ch = world.channel
        self.model = link_model(ch)
        self.exponent = float(getattr(ch, "exponent", ch.p.path_loss_exponent))
        self.dmin = float(ch.p.min_distance_m)
        self.windows = tuple(sorted({SHORT_S, dwell_s, dwell_s + 10.0, dwell_s + 20.0}))
        self.short_i = self.windows.index(SHORT_S)
        self.long_i = [self.windows.index(w) for w in (dwell_s, dwell_s + 10.0, dwell_s + 20.0)]
        self._candidates(world.site, margin_m)
        n = len(world.band_ids)
        true_power = BAND_POWER_DBM + ch.tx_power_err[:n]
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 16])
        self.var: dict[str, tuple[F64, F64]] = {
            "true": (true_power, np.zeros(1)),
            "pm1": (true_power + rng.uniform(-1.0, 1.0, n), np.linspace(-1.0, 1.0, 3)),
            "unknown": (np.full(n, float(BAND_POWER_DBM)), np.arange(-gains_db, gains_db + 1e-9, 1.0)),
        }

    def _candidates(self, site: SiteConfig, margin_m: float) -> None:
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        zmap = ZoneMap([ZoneShape(z.id, z.kind, as_points(z.polygon)) for z in site.zones])
        allowed = sorted(site.bands[0].allowed_zones)
        self._zmap, self._mask = zmap, np.array([z.id in allowed for z in site.zones], dtype=bool)
        self.margin_m = margin_m
        inside = sample_region([polys[z] for z in allowed], spacing=3.0, edge_spacing=1.5)
        lo_x, lo_y, hi_x, hi_y = zmap.bounds(pad=42.0)
        grid = grid_over((lo_x, lo_y, hi_x, hi_y), 6.0)
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        centre = np.array([(lo_x + hi_x) / 2, (lo_y + hi_y) / 2])
        far = np.concatenate([centre + r * np.stack([np.cos(angles), np.sin(angles)], axis=1)
                              for r in (80.0, 110.0, 150.0, 200.0, 300.0)])
        outside = np.concatenate([grid[self.out_m(grid) > margin_m], far])
        self.n_inside = len(inside)
        self.points = np.concatenate([inside, outside])
        self.base, self.kidx = self._base(self.points)
        self._local_in = grid_over((-1.5, -1.5, 1.5, 1.5), 1.5)  # round the best coarse points (grid 3 m)
        self._local_out = grid_over((-2.0, -2.0, 2.0, 2.0), 2.0)  # (grid 6 m)

    def out_m(self, pts: F64) -> F64:
        return np.asarray(self._zmap.union_signed_distance(self._zmap.signed_distances(pts), self._mask))

    def _base(self, pts: F64) -> tuple[F64, NDArray[np.int64]]:
        """(..., R) link mean minus the band power, and the K bin, at points (..., 2)."""
        ch = self.world.channel
        d = np.maximum(np.linalg.norm(pts[..., None, :] - ch.rx_pos, axis=-1), self.dmin)
        return np.asarray(ch.rx_gain - 10.0 * self.exponent * np.log10(d)), self.model.k_index(d)

    def window(self, bands: NDArray[np.int64], t_end: float) -> Window:
        w = self.world
        t_max = int(max(self.windows) / 0.85) + 3
        ts = w.ts[bands]
        last = np.array([np.searchsorted(row, t_end, side="right") for row in ts]) - 1
        idx = last[:, None] - t_max + 1 + np.arange(t_max)
        ok = idx >= 0
        idx = np.clip(idx, 0, None)
        age = t_end - np.take_along_axis(ts, idx, axis=1)
        valid = ok & (age < max(self.windows)) & (age >= 0)
        b = bands[:, None]
        return Window(w.heard[b, idx], w.x[b, idx], age, valid)

    def glr(self, bands: NDArray[np.int64], t_end: float) -> dict[str, F64]:
        """Variant -> (B, nW) GLR of the windows ending at t_end."""
        tab = self.model.tables(self.window(bands, t_end), self.windows)  # (B, R, nW, V, K)
        return {v: self._glr(tab, bands, v) for v in VARIANTS}

    def _lookup(self, tab: F64, m: F64, k: NDArray[np.int64]) -> F64:
        """Σ_r tab[b, r, w, m[b, w, p, r], k[...]] with linear interpolation in m -> (B, nW, P)."""
        n_b, n_r, n_w, n_v, n_k = tab.shape
        x = np.clip(m - V[0], 0.0, n_v - 1.001)
        i0 = x.astype(np.int64)
        fr = x - i0
        flat = tab.reshape(-1)
        base = ((np.arange(n_b)[:, None, None, None] * n_r + np.arange(n_r)[None, None, None, :]) * n_w
                + np.arange(n_w)[None, :, None, None])
        at = (base * n_v + i0) * n_k + k
        return np.asarray((flat[at] * (1.0 - fr) + flat[at + n_k] * fr).sum(axis=3))

    def _glr(self, tab: F64, bands: NDArray[np.int64], variant: str, top: int = 4) -> F64:
        power, deltas = self.var[variant]
        p_b = power[bands]
        n_b, n_r, n_w, n_v, n_k = tab.shape
        # Stage 1 (ranking only): every coarse candidate at the nearest grid mean.
        vi = np.clip(np.rint(p_b[:, None, None] + self.base[None] - V[0]), 0, n_v - 1).astype(np.int64)  # (B, P, R)
        rows = (np.arange(n_b)[:, None, None] * n_r + np.arange(n_r)[None, None, :]) * n_w  # (B, 1, R)
        cell = (vi * n_k + self.kidx[None])  # (B, P, R)
        flat = tab.reshape(n_b * n_r * n_w, n_v * n_k)
        coarse = np.stack([flat[rows + w, cell].sum(axis=2) for w in range(n_w)], axis=1)  # (B, nW, P)
        ni = self.n_inside
        in_top = np.argsort(-coarse[:, :, :ni], axis=2)[:, :, :top]
        out_top = ni + np.argsort(-coarse[:, :, ni:], axis=2)[:, :, :top]
        loc_in = self.points[in_top[:, :, 0]][:, :, None, :] + self._local_in
        loc_out = self.points[out_top[:, :, 0]][:, :, None, :] + self._local_out
        n_li, n_lo = len(self._local_in), len(self._local_out)
        ok_in = self.out_m(loc_in.reshape(-1, 2)).reshape(n_b, n_w, n_li) <= 0.0
        ok_out = self.out_m(loc_out.reshape(-1, 2)).reshape(n_b, n_w, n_lo) > self.margin_m
        cand = np.concatenate([self.points[in_top], loc_in, self.points[out_top], loc_out], axis=2)
        is_in = np.concatenate([np.ones((n_b, n_w, top), bool), ok_in, np.zeros((n_b, n_w, top + n_lo), bool)], axis=2)
        is_out = np.concatenate([np.zeros((n_b, n_w, top + n_li), bool), np.ones((n_b, n_w, top), bool), ok_out],
                                axis=2)
        base, kidx = self._base(cand)  # (B, nW, P2, R)
        parts = [self._lookup(tab, p_b[:, None, None, None] + d + base, kidx) for d in deltas.tolist()]
        stack = np.stack(parts)
        mx = stack.max(axis=0)
        tot = mx + np.log(np.exp(stack - mx).mean(axis=0))
        best_in = np.where(is_in, tot, -np.inf).max(axis=2)
        best_out = np.where(is_out, tot, -np.inf).max(axis=2)
        return np.asarray(2.0 * (best_out - best_in))

    def series(self, bands: NDArray[np.int64], t0: float, t1: float, chunk: int = 25) -> dict[str, F64]:
        """Variant -> (B, E) statistic D at window ends t0, t0 + EVAL_S, ... < t1 (short path held over the dwell)."""
        ends = np.arange(t0, t1, EVAL_S)
        held = max(round(self.dwell_s / EVAL_S), 0) + 1
        out = {v: np.full((len(bands), len(ends)), -np.inf) for v in VARIANTS}
        short = {v: np.full((len(bands), len(ends)), -np.inf) for v in VARIANTS}
        for j, t in enumerate(ends):
            for c in range(0, len(bands), chunk):
                sel = bands[c:c + chunk]
                g = self.glr(sel, float(t))
                for v in VARIANTS:
                    out[v][c:c + chunk, j] = g[v][:, self.long_i].max(axis=1)
                    short[v][c:c + chunk, j] = g[v][:, self.short_i]
        for v in VARIANTS:
            s = short[v]
            h = np.stack([np.concatenate([np.full((len(bands), k), -np.inf), s[:, :s.shape[1] - k]], axis=1)
                          for k in range(held)]).min(axis=0)
            out[v] = np.maximum(out[v], h)
        return out


# -- runs: one world per job ----------------------------------------------------------------------------
THRESHOLDS = np.arange(-10.0, 80.0, 0.25)


def raise_counts(d: F64, thresholds: F64 = THRESHOLDS) -> F64:
    """False raises per threshold over (B, E) series: an evaluation ≥ c after `REFRACTORY_S` below."""
    gap = max(round(REFRACTORY_S / EVAL_S), 1)
    counts = np.zeros(len(thresholds))
    for c0 in range(0, len(thresholds), 40):
        c = thresholds[c0:c0 + 40]
        above = d[None] >= c[:, None, None]  # (C, B, E)
        prev = np.zeros_like(above)
        for k in range(1, gap + 1):
            prev[..., k:] |= above[..., :-k]
        counts[c0:c0 + 40] = (above & ~prev).sum(axis=(1, 2))
    return counts


@dataclass
class Job:
    kind: str  # "null" or "escape"
    layout: str
    radio: str
    sigma: float
    seed: int
    bands: int
    duration: float
    loss: float = 0.15
    gains: float = 2.0
    escapes: int = 16


@dataclass
class JobResult:
    job: Job
    band_hours: float = 0.0
    counts: dict[str, F64] = field(default_factory=dict)  # variant -> raises per THRESHOLDS value
    escapes: list[dict[str, Any]] = field(default_factory=list)  # kind, how, out_m, per variant (t, D) series
    cpu_s: float = 0.0


def run_job(job: Job) -> JobResult:
    t_cpu = time.process_time()
    n_site = job.bands if job.kind == "null" else 48  # escape worlds: bands_breach's 48-band site and scripts
    site = layout_site(job.layout, n_site, shadowing_db=job.sigma)
    dwell = float(site.rules.breach_dwell_s)
    n_esc = 0 if job.kind == "null" else job.escapes
    sc, escapes = build_scenario(site, job.seed, n_esc, list(KINDS), job.duration, dwell)
    fallback = walking(site, job.seed).default
    assert fallback is not None
    ids = [b.id for b in site.bands] if job.kind == "null" else [e.band for e in escapes]
    scripts = {b: sc.script(b, fallback) for b in ids}
    ch = Channel(job.radio, job.sigma, job.loss, job.gains)
    res = JobResult(job)
    if job.kind == "null":
        world = simulate_world(site, ch, job.seed, scripts, job.duration)
        obs = IdealGLR(world, dwell, job.seed, job.gains)
        t0 = EVAL_S * math.ceil(max(obs.windows) / EVAL_S)
        d = obs.series(np.arange(len(ids)), t0, job.duration)
        res.band_hours = len(ids) * d["true"].shape[1] * EVAL_S / 3600.0
        res.counts = {v: raise_counts(d[v]) for v in VARIANTS}
    else:
        end = max(e.cross_at for e in escapes) + dwell + 30.0 + EVAL_S
        world = simulate_world(site, ch, job.seed, scripts, end + 1.0)
        obs = IdealGLR(world, dwell, job.seed, job.gains)
        t0 = EVAL_S * math.floor((min(e.cross_at for e in escapes) - 3 * EVAL_S) / EVAL_S)
        d = obs.series(np.arange(len(ids)), t0, end)
        times = np.arange(t0, end, EVAL_S)
        for i, e in enumerate(escapes):
            sel = (times >= e.cross_at) & (times <= e.cross_at + dwell + 30.0)
            res.escapes.append({"kind": e.kind, "how": e.how, "out_m": e.out_m, "cross_at": e.cross_at,
                                "t": times[sel] - e.cross_at, **{v: d[v][i, sel] for v in VARIANTS}})
    res.cpu_s = time.process_time() - t_cpu
    return res


def plan_jobs(a: argparse.Namespace) -> list[Job]:
    """Escape worlds (bands_breach's seeds: the same escapes) first, then null worlds (σ cycled per layout)."""
    layouts = [x for x in a.layouts.split(",") if x]
    radios = [x for x in a.radios.split(",") if x]
    sigmas = [float(x) for x in a.sigmas.split(",") if x]
    jobs = [Job("escape", lay, radio, s, a.seed + 100 * k + int(s), 48, 660.0)
            for lay in layouts for radio in radios for s in sigmas for k in range(a.seeds)] if a.seeds else []
    for k in range(a.null_worlds):
        for lay in layouts:
            for radio in radios:
                s = sigmas[k % len(sigmas)]
                jobs.append(Job("null", lay, radio, s, a.null_seed + 1000 * k + len(jobs), a.null_bands,
                                a.null_duration))
    return jobs


# -- tables ---------------------------------------------------------------------------------------------
def pick_threshold(counts: F64, band_hours: float, budget: float) -> tuple[float, int]:
    """The lowest threshold whose false raises stay within `budget` per 100 band-hours (inf if none)."""
    ok = np.nonzero(counts <= budget * band_hours / 100.0)[0]
    return (float(THRESHOLDS[ok[0]]), int(counts[ok[0]])) if len(ok) else (math.inf, -1)


def thresholds(results: list[JobResult], budget: float) -> tuple[dict[tuple[str, str, str], float], list[list[str]]]:
    """Per (layout or 'all', radio, variant): threshold from the pooled null worlds; rows for the table."""
    out: dict[tuple[str, str, str], float] = {}
    rows: list[list[str]] = []
    nulls = [r for r in results if r.job.kind == "null"]
    keys = sorted({(r.job.layout, r.job.radio) for r in nulls}, key=lambda k: (k[1], list(BREACH_LAYOUTS).index(k[0])))
    radios = sorted({r.job.radio for r in nulls})
    for lay, radio in [*keys, *(("all", r) for r in radios)]:
        group = [r for r in nulls if r.job.radio == radio and lay in ("all", r.job.layout)]
        bh = sum(r.band_hours for r in group)
        for v in VARIANTS:
            counts = np.sum([r.counts[v] for r in group], axis=0)
            thr, n = pick_threshold(counts, bh, budget)
            out[(lay, radio, v)] = thr
            bound = f"{100 * n / bh:.2f} (≤{100 * poisson_upper(n) / bh:.2f})" if n >= 0 else "-"
            sig = ",".join(f"{s:g}" for s in sorted({r.job.sigma for r in group}))
            rows.append([lay, radio, v, str(len(group)), sig, f"{bh:.0f}", f"{thr:.2f}", str(n), bound])
    return out, rows


def _caught(e: dict[str, Any], v: str, thr: float) -> bool:
    return bool(len(e[v]) and np.max(e[v]) >= thr)


def recall_rows(results: list[JobResult], thr: dict[tuple[str, str, str], float]) -> list[list[str]]:
    rows = []
    esc = [r for r in results if r.job.kind == "escape"]
    keys = sorted({(r.job.layout, r.job.radio, r.job.sigma) for r in esc},
                  key=lambda k: (list(BREACH_LAYOUTS).index(k[0]), k[1], k[2]))
    for lay, radio, sigma in keys:
        es = [e for r in esc if (r.job.layout, r.job.radio, r.job.sigma) == (lay, radio, sigma) for e in r.escapes]
        stop = [e for e in es if e["kind"] in ("stand", "return")]
        row = [lay, radio, f"{sigma:.0f}", str(len(es))]
        for v in VARIANTS:
            row.append(f"{sum(_caught(e, v, thr.get(('all', radio, v), math.inf)) for e in es)}/{len(es)}")
        for v in VARIANTS:
            t = thr.get(("all", radio, v), math.inf)
            row.append(f"{sum(_caught(e, v, t) for e in stop)}/{len(stop)}")
        for v in VARIANTS:
            t = thr.get((lay, radio, v), math.inf)
            row.append(f"{sum(_caught(e, v, t) for e in es)}/{len(es)}")
        t = thr.get(("all", radio, "true"), math.inf)
        lat = [float(e["t"][np.argmax(e["true"] >= t)]) for e in es if _caught(e, "true", t)]
        row.append(f"{np.percentile(lat, 50):.0f}/{np.percentile(lat, 95):.0f}" if lat else "-")
        margin = [float(np.max(e["true"])) - t for e in stop if len(e["true"])]
        row.append(f"{np.percentile(margin, 10):.1f}" if margin else "-")
        rows.append(row)
    return rows


def render(results: list[JobResult], budget: float, md: list[str]) -> None:
    from rich.console import Console

    from bench.bands_breach import show
    con = Console(width=250)
    thr, rows = thresholds(results, budget)
    show(con, f"Ideal observer thresholds (budget {budget:g} false raises per 100 band-hours; null worlds: 2/3 "
              f"walkers, 1/3 standing 0.5–3 m inside a fence; 'all' = the radio's layouts pooled)",
         ["layout", "radio", "variant", "worlds", "σ", "null band-h", "threshold (2·lnΛ)", "raises at it",
          "per 100 bh (95 % upper)"], rows, md)
    cols = ["layout", "radio", "σ", "escapes", *[f"ideal {v}" for v in VARIANTS],
            *[f"stop-out {v}" for v in VARIANTS], *[f"layout thr {v}" for v in VARIANTS],
            "latency p50/p95 s (true)", "stop-out margin p10 (true)"]
    show(con, "Recall within breach_dwell_s + 30 s: the ideal observer (bench.bands_bound; thresholds: the "
              "radio's pooled null, 'layout thr' = the layout's own)", cols, recall_rows(results, thr), md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default=",".join(DEFAULT_BREACH_LAYOUTS))
    ap.add_argument("--radios", default="default,alt")
    ap.add_argument("--sigmas", default="4,6,8")
    ap.add_argument("--seeds", type=int, default=2, help="escape worlds per row (bands_breach's seeds; 0 = null only)")
    ap.add_argument("--null-worlds", type=int, default=6, help="null worlds per layout × radio (σ cycled)")
    ap.add_argument("--null-bands", type=int, default=100)
    ap.add_argument("--null-duration", type=float, default=1200.0)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=16_000, help="bands_breach's --seed (the same escapes)")
    ap.add_argument("--null-seed", type=int, default=86_000, help="first null world's seed (another one adds "
                    "independent null worlds: pool the --save files with --load A B)")
    ap.add_argument("--md", type=Path)
    ap.add_argument("--save", type=Path, help="pickle the results here (rewritten as jobs finish)")
    ap.add_argument("--load", type=Path, nargs="*", help="render saved results instead of running")
    a = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, load {load[0]:.1f}, "
          f"python {platform.python_version()}, jobs {a.jobs}", flush=True)
    results: list[JobResult] = []
    t_wall = time.perf_counter()
    if a.load:
        for p in a.load:
            with p.open("rb") as fh:
                results += pickle.load(fh)  # our own files, written by --save
    else:
        jobs = plan_jobs(a)
        with ProcessPoolExecutor(max_workers=max(a.jobs, 1)) as ex:
            for k, r in enumerate(ex.map(run_job, jobs, chunksize=1)):
                results.append(r)
                print(f"  {k + 1}/{len(jobs)} {r.job.kind} {r.job.layout} {r.job.radio} σ{r.job.sigma:g}: "
                      f"{r.cpu_s:.0f} s CPU, {time.perf_counter() - t_wall:.0f} s wall", flush=True)
                if a.save is not None:
                    with a.save.open("wb") as fh:
                        pickle.dump(results, fh)
    md: list[str] = []
    render(results, a.budget, md)
    cpu = sum(r.cpu_s for r in results)
    print(f"total {time.perf_counter() - t_wall:.0f} s wall, {cpu:.0f} s CPU in jobs")
    if a.md is not None:
        a.md.write_text("\n".join(md) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
