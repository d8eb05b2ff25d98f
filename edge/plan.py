"""`qwatch-edge plan`: can this receiver layout enforce the geofence? Find out before people move in.

Monte Carlo over the site's own geometry with its radio parameters: at every grid point, windows
of RSSI samples are drawn (log-distance path loss, slow + fast shadowing, loss rising near
sensitivity, residual receiver gain errors after calibration) and run through the real filter
and localiser for the expected localisation error. Per fence edge, windows of adverts of a person
standing 20-35 m outside it (recall) and 0.5-3 m inside it (false alarms) go through the breach
detector itself (`edge.bands.window_test`, the window likelihood-ratio test with the pipeline's
threshold): recall is the share of standing spots whose window reaches the threshold, and the
false-alarm rate is predicted for a person standing at that fence all the time, from a normal fit
to the inside windows' statistic (a rare-event rate cannot be counted in a few hundred draws).
Each weak edge says why. Where one more receiver would help most is found by the Cramér-Rao bound,
which is cheap enough to try every candidate position. Whether the reference beacons calibrate every
receiver, and where one more beacon would help, is `edge.plan_calibration`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from edge.bands.geometry import as_points, grid_over, point_in_polygon
from edge.bands.hearing import HearingParams, miss_table
from edge.bands.locate import LN10, LinkModel, LocateParams, locate
from edge.bands.rssi_filter import robust_median
from edge.bands.rules import RuleParams
from edge.bands.window_test import Candidates, LinkInputs, WindowParams, fast_sd, run_test, slow_sd
from edge.breach_model_health import breach_model_row
from edge.plan_calibration import BEACON_POWER_DBM, CalibrationPlan, format_calibration, plan_calibration
from edge.receiver_health import describe, load_receivers
from protocols.errors import ConfigError
from protocols.payloads import ReceiverHealth
from protocols.site_config import SiteConfig, load_site_config

POWER = -59.0
WINDOW = 8
LOSS = 0.2
GAIN_RESIDUAL_DB = 1.5
RULES = RuleParams()


FLOOR_DBM = -100.0
BAND_GAIN_SD_DB = 1.0  # a band's gain once learned from its own history (band_gain)
OUT_M = (20.0, 27.5, 35.0)  # where escapees stand (issue 16)
IN_M = (0.5, 1.5, 3.0)  # where people stand at a fence
# Where a weak edge's extra receiver goes: ~20 m beyond the fence, among the escapees' standing spots, so
# "standing out there" and "at the fence" differ by tens of dB at it (the demo layout's outside ring).
FIX_OUT_M = 22.0


@dataclass(frozen=True)
class EdgeReport:
    """One fence edge (a segment of the permitted area's outline)."""

    zone: str
    a: tuple[float, float]
    b: tuple[float, float]
    recall: float  # share of spots 20-35 m outside where a window of standing reaches the breach threshold
    false_rate: float  # predicted false breaches per 100 band-hours for a person standing at this fence
    why: str = ""  # for a weak edge: the reason, in words


@dataclass
class PlanReport:
    """Everything `plan` prints and draws."""

    err_p50: float
    err_p90: float
    edges: list[EdgeReport]
    weak_spots: list[tuple[float, float, float]]
    suggestion: tuple[float, float]
    suggestion_gain: float
    grid: np.ndarray = field(repr=False)
    grid_err: np.ndarray = field(repr=False)
    receivers: dict[str, ReceiverHealth] = field(default_factory=dict)  # as a node reported them (--receivers)
    calibration: CalibrationPlan | None = None  # what the beacons leave of each receiver's gain uncertainty

    @property
    def score(self) -> float:
        """Layout quality, 0..1: worst-edge recall minus worst-edge false rate, less a localisation term."""
        if not self.edges:
            return 0.0
        worst_recall = min(e.recall for e in self.edges)
        worst_false = max(e.false_rate for e in self.edges)  # per 100 band-hours; the budget is 0.5
        return worst_recall - min(worst_false, 1.0) - min(self.err_p90 / 100.0, 0.5)

    @property
    def recall(self) -> float:
        """Predicted recall for stand-outside escapes: the mean over fence edges."""
        return float(np.mean([e.recall for e in self.edges])) if self.edges else 0.0

    @property
    def false_per_100h(self) -> float:
        """Predicted false breaches per 100 band-hours if everyone stood at a fence (the worst case)."""
        return float(np.mean([e.false_rate for e in self.edges])) if self.edges else 0.0


def _sample_windows(site: SiteConfig, pts: np.ndarray, trials: int, rng: np.random.Generator) -> np.ndarray:
    """(len(pts)*trials, R, WINDOW) RSSI samples, NaN where lost."""
    rx = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
    sigma = site.radio.shadowing_db
    n = site.radio.path_loss_exponent
    p = np.repeat(pts, trials, axis=0)
    d = np.maximum(np.linalg.norm(p[:, None, :] - rx[None, :, :], axis=2), 0.5)
    mean = POWER - 10 * n * np.log10(d) + rng.normal(0, GAIN_RESIDUAL_DB, (1, len(rx)))
    slow = rng.normal(0, sigma * math.sqrt(0.5), (*mean.shape, 1))
    s = mean[..., None] + slow + rng.normal(0, sigma * math.sqrt(0.5), (*mean.shape, WINDOW))
    ok = (rng.random(s.shape) < (1 - LOSS) / (1 + np.exp(-(s + 96) / 2))) & (s >= -100)
    return np.where(ok, s, np.nan)


def _solve(site: SiteConfig, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, LinkModel]:
    rx = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
    med, cnt, spread = robust_median(samples)
    params = LocateParams(path_loss_exponent=site.radio.path_loss_exponent, shadowing_db=site.radio.shadowing_db)
    return locate(med, cnt, spread, np.full(len(med), POWER), rx, params, site.radio.path_loss_exponent)


@dataclass(frozen=True)
class RxModel:
    """Each receiver as the plan models it: its floor, variance the detector adds to its links, whether it
    hears at all, and its gain error left after calibration (sd). The default is every receiver sound with
    `GAIN_RESIDUAL_DB`; `from_health` takes what a node reported."""

    floor: np.ndarray  # (R,) dBm
    extra_var: np.ndarray  # (R,) dB²
    alive: np.ndarray  # (R,) bool
    gain_sd: np.ndarray  # (R,) dB

    @staticmethod
    def sound(n: int) -> RxModel:
        return RxModel(np.full(n, FLOOR_DBM), np.zeros(n), np.ones(n, dtype=bool), np.full(n, GAIN_RESIDUAL_DB))

    @staticmethod
    def from_health(site: SiteConfig, health: Mapping[str, ReceiverHealth]) -> RxModel:
        """Deaf: its reported floor. Gain off: corrected by the detector, but down-weighted as the detector
        does ((|dev| - 3)² dB²). Silent: hears nothing and says nothing by missing."""
        hp = HearingParams()
        m = RxModel.sound(len(site.receivers))
        for r, rx in enumerate(site.receivers):
            h = health.get(rx.id)
            if h is None:
                continue
            if h.state == "deaf":
                m.floor[r] = max(h.floor_dbm, FLOOR_DBM)
            elif h.state == "gain_off":
                m.extra_var[r] = max(abs(h.gain_dev_db) - (hp.gain_off_db - 1.0), 0.0) ** 2
            elif h.state == "silent":
                m.alive[r] = False
        return m


def _window_stats(site: SiteConfig, cand: Candidates, pts: np.ndarray, trials: int, rng: np.random.Generator,
                  window_s: float, wp: WindowParams, rxm: RxModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Window-test statistic (2·ln LR) per draw for a band standing at each point (len(pts)·trials,),
    and per point the number of receivers that would hear it well (mean level 6 dB above the floor)."""
    rx = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
    rxm = rxm or RxModel.sound(len(rx))
    floor = rxm.floor[None, :, None]
    sigma, n_exp = site.radio.shadowing_db, site.radio.path_loss_exponent
    hp = HearingParams()
    p = np.repeat(pts, trials, axis=0)
    d = np.maximum(np.linalg.norm(p[:, None, :] - rx[None, :, :], axis=2), 0.5)
    n_adv = round(window_s)
    mean = (POWER + rng.normal(0, BAND_GAIN_SD_DB, (len(p), 1)) - 10 * n_exp * np.log10(d)
            + rng.normal(0, rxm.gain_sd[None, :], (1, len(rx))))
    s = (mean + rng.normal(0, sigma * math.sqrt(0.5), mean.shape))[..., None] + rng.normal(
        0, sigma * math.sqrt(0.5), (*mean.shape, n_adv))
    p_ok = (1 - hp.base_loss) / (1 + np.exp(-(s - floor - hp.knee_above_floor_db) / hp.width_db))
    ok = (rng.random(s.shape) < p_ok) & (s >= floor) & rxm.alive[None, :, None]
    k = ok.sum(axis=2).astype(np.float64)
    xbar = np.where(k > 0, np.where(ok, s, 0.0).sum(axis=2) / np.maximum(k, 1.0), 0.0)
    logmiss = np.stack([miss_table(float(f), fast_sd(sigma, wp), hp) for f in rxm.floor])
    m = len(p)
    listen = rxm.alive.copy()
    x = LinkInputs(k=k, xbar=xbar, n_sent=np.full(m, float(n_adv)), power=np.full(m, POWER),
                   sb=np.full(m, BAND_GAIN_SD_DB),
                   slow_sd=np.broadcast_to(slow_sd(sigma, wp, rxm.gain_sd**2 + rxm.extra_var), k.shape),
                   fast_sd=fast_sd(sigma, wp), listen=listen, floor=rxm.floor.copy(),
                   logmiss=logmiss, exponent=n_exp,
                   sets=cand.restrict(np.zeros(m, dtype=np.int64), k, np.full(m, float(n_adv)), listen),
                   exponent_up=wp.exponent_up, profile_above=wp.profile_above)  # as the detector does
    lr = run_test(cand, x).lr
    d_pt = np.maximum(np.linalg.norm(pts[:, None, :] - rx[None, :, :], axis=2), 0.5)
    hear = ((POWER - 10 * n_exp * np.log10(d_pt) > rxm.floor[None, :] + 6.0) & rxm.alive[None, :]).sum(axis=1)
    return np.where(np.isnan(lr), -np.inf, lr), hear


def _false_per_100h(lr_in: np.ndarray, threshold: float, window_s: float) -> float:
    """Predicted false breaches per 100 band-hours for a person standing at the fence: normal tail of the
    inside windows' statistic at the threshold, times the number of independent windows in 100 hours."""
    finite = lr_in[np.isfinite(lr_in)]
    if len(finite) < 5:
        return 0.0
    mu, sd = float(finite.mean()), max(float(finite.std()), 1e-6)
    tail = 0.5 * math.erfc((threshold - mu) / (sd * math.sqrt(2.0)))
    return tail * 100.0 * 3600.0 / window_s


def _outline_edges(site: SiteConfig) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Edges of permitted zones on the permitted area's outline, with their outward normal."""
    permitted = [(z.id, as_points(z.polygon)) for z in site.zones if z.kind == "permitted"]
    out = []
    for zid, poly in permitted:
        centroid = poly.mean(axis=0)
        for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            mid = (a + b) / 2
            normal = np.array([b[1] - a[1], a[0] - b[0]]) / max(float(np.linalg.norm(b - a)), 1e-9)
            if np.dot(normal, mid - centroid) < 0:
                normal = -normal
            probe = (mid + normal * 0.5)[None, :]
            if any(point_in_polygon(probe, p)[0] for _, p in permitted):
                continue  # shared with another permitted zone: not a fence
            out.append((zid, a, b, normal))
    return out


def _crlb_error(site: SiteConfig, rx: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Cramér-Rao RMS error at each point for receivers `rx` (links below -95 dBm count as absent)."""
    n = site.radio.path_loss_exponent
    sigma = max(site.radio.shadowing_db * math.sqrt(0.5 + 0.5 / WINDOW), 1.0)
    diff = pts[:, None, :] - rx[None, :, :]
    d2 = np.maximum((diff**2).sum(axis=2), 0.25)
    heard = (POWER - 5 * n * np.log10(d2)) > -95
    k = 10 * n / LN10 / sigma
    u = diff / d2[..., None]
    fim = np.einsum("pr,pri,prj->pij", heard * k * k, u, u) + np.eye(2) * 1e-4
    return np.asarray(np.sqrt(np.trace(np.linalg.inv(fim), axis1=1, axis2=2)))


def make_plan(site: SiteConfig, *, seed: int = 0, trials: int = 12, spacing: float = 2.0,
              health: Mapping[str, ReceiverHealth] | None = None,
              beacon_power_dbm: float = BEACON_POWER_DBM, beacon_gains: bool = False) -> PlanReport:
    """Run the planning Monte Carlo for a site; with `health` (a node's reported receivers), the breach
    predictions model each receiver as it was reported (deaf, gain off and down-weighted, silent). The beacon
    section (`edge.plan_calibration`) takes the beacons' advertised 1 m power, which the site file lacks. With
    `beacon_gains`, the fence predictions take each receiver's gain sd from it instead of `GAIN_RESIDUAL_DB`
    (measured, not the default: docs/bands.md, "Plan: do the beacons calibrate every receiver")."""
    if not site.receivers:
        raise ConfigError("site", "receivers", "plan needs at least one receiver")
    rng = np.random.default_rng(seed)
    permitted = [as_points(z.polygon) for z in site.zones if z.kind == "permitted"]
    rx = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
    bounds = _bounds(permitted, rx, pad=12.0)
    grid = grid_over(bounds, spacing)
    xy, _, _ = _solve(site, _sample_windows(site, grid, trials, rng))
    err = np.linalg.norm(xy - np.repeat(grid, trials, axis=0), axis=1).reshape(len(grid), trials)
    grid_err = np.sqrt((err**2).mean(axis=1))
    inside = np.zeros(len(grid), dtype=bool)
    for poly in permitted:
        inside |= point_in_polygon(grid, poly)
    in_err = grid_err[inside] if inside.any() else grid_err
    calibration = plan_calibration(site, floor_dbm=FLOOR_DBM, beacon_power_dbm=beacon_power_dbm)
    rxm = RxModel.from_health(site, health or {})
    if beacon_gains:
        rxm.gain_sd[:] = calibration.gain_sd
    edges = _edge_reports(site, trials, rng, rxm, health or {})
    order = np.argsort(-np.where(inside, grid_err, -1))[:3]
    weak = [(float(grid[i, 0]), float(grid[i, 1]), float(grid_err[i])) for i in order if inside[i]]
    suggestion, gain = _suggest(site, rx, grid[inside] if inside.any() else grid, bounds)
    return PlanReport(float(np.median(in_err)), float(np.percentile(in_err, 90)), edges, weak, suggestion, gain,
                      grid, grid_err, dict(health or {}), calibration)


def _edge_reports(site: SiteConfig, trials: int, rng: np.random.Generator, rxm: RxModel,
                  health: Mapping[str, ReceiverHealth]) -> list[EdgeReport]:
    """Recall and false-alarm rate of the breach detector per fence edge, with the reason a weak edge is weak."""
    rules = RuleParams.from_rules(site.rules)
    wp = WindowParams(threshold=rules.window_threshold)
    window_s = rules.breach_dwell_s + 10.0
    if not site.bands:
        return []
    # One allowed area for the plan: the permitted zones the first band may be in (else all permitted).
    allowed = set(site.bands[0].allowed_zones)
    plan_site = site.model_copy(update={"bands": [site.bands[0].model_copy(update={"allowed_zones": sorted(allowed)})]})
    rx = np.array([r.position for r in site.receivers], dtype=np.float64).reshape(-1, 2)
    cand = Candidates(plan_site, rx, wp)
    out: list[EdgeReport] = []
    for zid, a, b, normal in _outline_edges(site):
        t = np.array([0.2, 0.5, 0.8])[:, None]
        along = a + t * (b - a)
        outside = np.concatenate([along + normal * o for o in OUT_M])
        inside = np.concatenate([along - normal * i for i in IN_M])
        # The detector takes the largest of several windows over the ~20 s a person stands out before
        # the deadline; the slow shadowing decorrelates within that on a time-varying channel: two
        # independent draws (dwell + 10 s and dwell + 20 s) stand for it.
        lr_out, hear_out = _window_stats(site, cand, outside, trials, rng, window_s, wp, rxm)
        lr_out2, _ = _window_stats(site, cand, outside, trials, rng, window_s + 10.0, wp, rxm)
        lr_out = np.maximum(lr_out, lr_out2)
        lr_in, _ = _window_stats(site, cand, inside, trials, rng, window_s, wp, rxm)
        recall = float(np.mean(lr_out >= wp.threshold))
        false = _false_per_100h(lr_in, wp.threshold, window_s + 10.0)
        why = ""
        if recall < 0.9:
            mid = len(along) * (len(OUT_M) // 2) + len(along) // 2  # the middle of the edge, 27.5 m out
            near = float(np.min(np.linalg.norm(rx - outside[mid], axis=1)))
            fix = (a + b) / 2 + normal * FIX_OUT_M
            why = (f"a person {OUT_M[len(OUT_M) // 2]:.0f} m out from the middle of this fence is heard well "
                   f"(6 dB above the floor) by {int(hear_out[mid])} receiver(s), the nearest {near:.0f} m away; "
                   f"add a receiver about {FIX_OUT_M:.0f} m out at ({fix[0]:.0f}, {fix[1]:.0f})")
        elif false > 0.5:
            fix = (a + b) / 2 + normal * FIX_OUT_M
            why = ("a person standing at this fence often looks outside (receivers too far on both sides); add a "
                   f"receiver inside near this fence, or one about {FIX_OUT_M:.0f} m out at "
                   f"({fix[0]:.0f}, {fix[1]:.0f})")
        if why:
            why += _bad_nearby(site, health, (a + b) / 2)
        out.append(EdgeReport(zid, (float(a[0]), float(a[1])), (float(b[0]), float(b[1])), recall, false, why))
    return out


def _bad_nearby(site: SiteConfig, health: Mapping[str, ReceiverHealth], mid: np.ndarray,
                within_m: float = 30.0) -> str:
    """", with rx-a deaf" for the reported receivers that are not ok within `within_m` of an edge's middle."""
    near = [f"{r.id} {health[r.id].state}" for r in site.receivers
            if r.id in health and health[r.id].state != "ok"
            and float(np.linalg.norm(np.asarray(r.position, dtype=np.float64) - mid)) <= within_m]
    return f"; with {', '.join(near)}" if near else ""


def _bounds(permitted: list[np.ndarray], rx: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    allp = np.concatenate([*permitted, rx], axis=0)
    lo, hi = allp.min(axis=0) - pad, allp.max(axis=0) + pad
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _suggest(site: SiteConfig, rx: np.ndarray, pts: np.ndarray,
             bounds: tuple[float, float, float, float]) -> tuple[tuple[float, float], float]:
    """The candidate position whose added receiver lowers the mean CRLB error over `pts` most."""
    base = float(np.mean(_crlb_error(site, rx, pts)))
    best, best_val = (float(rx[0, 0]), float(rx[0, 1])), base
    for c in grid_over(bounds, 4.0):
        val = float(np.mean(_crlb_error(site, np.vstack([rx, c]), pts)))
        if val < best_val:
            best, best_val = (float(c[0]), float(c[1])), val
    return best, base - best_val


def render_png(site: SiteConfig, report: PlanReport, out: Path) -> None:
    """Heat map of the expected error with zones, receivers, beacons and the suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = np.unique(report.grid[:, 0]), np.unique(report.grid[:, 1])
    img = report.grid_err.reshape(len(ys), len(xs))
    fig, ax = plt.subplots(figsize=(8, 7))
    mesh = ax.pcolormesh(xs, ys, np.minimum(img, 30), cmap="viridis_r", shading="auto")
    fig.colorbar(mesh, ax=ax, label="expected localisation error (RMS, m)")
    for z in site.zones:
        poly = np.vstack([as_points(z.polygon), as_points(z.polygon)[:1]])
        ax.plot(poly[:, 0], poly[:, 1], color="red" if z.kind == "restricted" else "white", lw=2)
        c = poly[:-1].mean(axis=0)
        ax.text(c[0], c[1], z.id, color="white", ha="center", fontsize=8)
    rx = np.array([r.position for r in site.receivers]).reshape(-1, 2)
    ax.scatter(rx[:, 0], rx[:, 1], marker="^", s=80, c="orange", edgecolors="k", label="receiver")
    if site.beacons:
        bc = np.array([b.position for b in site.beacons]).reshape(-1, 2)
        ax.scatter(bc[:, 0], bc[:, 1], marker="*", s=120, c="cyan", edgecolors="k", label="beacon")
    ax.scatter([report.suggestion[0]], [report.suggestion[1]], marker="X", s=120, c="magenta",
               edgecolors="k", label="suggested receiver")
    if report.calibration is not None and report.calibration.suggestion is not None:
        bx, by = report.calibration.suggestion.position
        ax.scatter([bx], [by], marker="P", s=120, c="cyan", edgecolors="k", label="suggested beacon")
    ax.set_title(f"{site.site.id}: error p50 {report.err_p50:.1f} m, p90 {report.err_p90:.1f} m, "
                 f"score {report.score:.2f}")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, east)")
    ax.set_ylabel("y (m, north)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _receiver_lines(health: Mapping[str, ReceiverHealth]) -> list[str]:
    """What a node reported about its receivers (`--receivers`), each bad one with its fix."""
    if not health:
        return []
    bad = {rx: h for rx, h in sorted(health.items()) if h.state != "ok"}
    lines = [f"receivers as the node reported them: {len(health) - len(bad)} of {len(health)} ok"
             + ("; the fence predictions below model the others as reported" if bad else "")]
    for rx, h in bad.items():
        detail, fix = describe(rx, h)
        lines.append(f"  {h.state:8s} {detail}; fix: {fix}")
    return lines


def format_report(site: SiteConfig, r: PlanReport) -> str:
    """The text `plan` prints."""
    lines = [f"site {site.site.id}: {len(site.receivers)} receivers, {len(site.beacons)} beacons, "
             f"shadowing {site.radio.shadowing_db} dB, exponent {site.radio.path_loss_exponent}",
             f"expected localisation error inside permitted zones: p50 {r.err_p50:.1f} m, p90 {r.err_p90:.1f} m"]
    lines += _receiver_lines(r.receivers)
    if r.calibration is not None:
        lines += format_calibration(r.calibration, len(site.beacons))
    lines += ["fence edges (recall: share of people standing 20-35 m out whom the breach detector catches;",
              "             false: predicted false breaches per 100 band-hours for a person standing at the fence):"]
    for e in r.edges:
        flag = f"  <- weak: {e.why}" if e.why else ""
        lines.append(f"  {e.zone:12s} ({e.a[0]:.0f},{e.a[1]:.0f})-({e.b[0]:.0f},{e.b[1]:.0f}): "
                     f"recall {e.recall:5.1%}  false {e.false_rate:5.2f}{flag}")
    verdict = "good" if r.recall >= 0.95 and r.false_per_100h <= 0.5 and not any(e.why for e in r.edges) else "weak"
    lines.append(f"predicted with this detector: recall {r.recall:.1%} (stand-outside escapes), "
                 f"false breaches {r.false_per_100h:.2f} per 100 band-hours at a fence; layout {verdict}")
    for x, y, err in r.weak_spots:
        lines.append(f"weak spot: ({x:.0f}, {y:.0f}) expected error {err:.1f} m")
    lines.append(f"one more receiver would help most at ({r.suggestion[0]:.0f}, {r.suggestion[1]:.0f}) "
                 f"(it would lower the mean expected error by {r.suggestion_gain:.1f} m)")
    lines.append(f"layout score {r.score:.2f} (worst-edge recall - worst-edge false rate - p90 error/100)")
    return "\n".join(lines)


def plan(
    config: Annotated[Path, typer.Option("--config", help="site YAML (docs/protocol.md §3)")],
    out: Annotated[Path | None, typer.Option("--out", help="write a PNG heat map here")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Monte Carlo seed")] = 0,
    receivers: Annotated[Path | None, typer.Option(
        "--receivers", help="a node's saved node telemetry (DATA_DIR/node-telemetry.json): show its receivers' "
                            "health and predict with them as reported")] = None,
    beacon_power: Annotated[float, typer.Option(
        "--beacon-power", min=-100.0, max=0.0, help="the beacons' advertised 1 m power, dBm")] = BEACON_POWER_DBM,
) -> None:
    """Expected localisation error, breach recall and false alarms per fence edge, whether the beacons calibrate
    every receiver, and where to add a receiver or a beacon."""
    try:
        site = load_site_config(config)
        health = load_receivers(receivers)[0] if receivers is not None else None
        report = make_plan(site, seed=seed, health=health, beacon_power_dbm=beacon_power)
    except ConfigError as err:
        typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(site, report))
    if receivers is not None:
        row = breach_model_row(receivers)
        typer.echo(f"breach model as the node measured it: {row.detail}")
        if row.status != "pass":
            typer.echo(f"  the false-alarm figures above assume the model fits; {row.fix}")
    if out is not None:
        render_png(site, report, out)
        typer.echo(f"heat map written to {out}")
