"""`qwatch-edge plan`: can this receiver layout enforce the geofence? Find out before people move in.

Monte Carlo over the site's own geometry with its radio parameters: at every grid point, windows
of RSSI samples are drawn (log-distance path loss, slow + fast shadowing, loss rising near
sensitivity, residual receiver gain errors after calibration) and run through the real filter,
localiser and breach likelihood test. It reports the expected localisation error, per fence
edge the probability that a window 10 m outside reads "outside" (recall) and that one 2 m inside
does (false alarm), the weak spots, and where one more receiver would help most (by the
Cramér-Rao bound, which is cheap enough to try every candidate position).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from edge.bands.geometry import as_points, grid_over, point_in_polygon, sample_region
from edge.bands.locate import LN10, LinkModel, LocateParams, locate
from edge.bands.rssi_filter import robust_median
from edge.bands.rules import RuleParams
from protocols.errors import ConfigError
from protocols.site_config import SiteConfig, load_site_config

POWER = -59.0
WINDOW = 8
LOSS = 0.2
GAIN_RESIDUAL_DB = 1.5
RULES = RuleParams()


@dataclass(frozen=True)
class EdgeReport:
    """One fence edge (a segment of the permitted area's outline)."""

    zone: str
    a: tuple[float, float]
    b: tuple[float, float]
    recall: float  # share of points 10 m outside where evidence reaches the threshold within 30 s
    false_rate: float  # share of points 2 m inside where outside-evidence would build up (drift < 0)


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

    @property
    def score(self) -> float:
        """Layout quality, 0..1: worst-edge recall minus worst-edge false rate, less a localisation term."""
        if not self.edges:
            return 0.0
        worst_recall = min(e.recall for e in self.edges)
        worst_false = max(e.false_rate for e in self.edges)
        return worst_recall - worst_false - min(self.err_p90 / 100.0, 0.5)


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


def _evidence_rate(site: SiteConfig, pts: np.ndarray, trials: int, rng: np.random.Generator,
                   inside_pts: np.ndarray, global_pts: np.ndarray, permitted: list[np.ndarray]) -> np.ndarray:
    """Per point: expected growth per second of the breach rule's evidence (CUSUM) if a band stood there."""
    xy, _, model = _solve(site, _sample_windows(site, pts, trials, rng))
    rows = np.arange(len(xy))
    hl_in = model.half_log_d2(inside_pts)
    hl_all = model.half_log_d2(global_pts)
    best = model.cost(rows, hl_all).min(axis=1)
    local = xy[:, None, :] + grid_over((-6.0, -6.0, 6.0, 6.0), 3.0)[None, :, :]
    hl_local = model.half_log_d2(local.reshape(-1, 2)).reshape(len(xy), -1, hl_all.shape[1])
    best = np.minimum(best, model.cost(rows, hl_local).min(axis=1))
    delta = np.maximum(model.cost(rows, hl_in).min(axis=1) - best, 0.0)
    est_inside = np.zeros(len(xy), dtype=bool)
    for poly in permitted:
        est_inside |= point_in_polygon(xy, poly)
    gain = np.where(est_inside, -RULES.evidence_drift_inside,
                    np.minimum(delta, RULES.evidence_cap) - RULES.evidence_drift)
    return np.asarray(RULES.evidence_weight * gain.reshape(len(pts), trials).mean(axis=1))


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


def make_plan(site: SiteConfig, *, seed: int = 0, trials: int = 12, spacing: float = 2.0) -> PlanReport:
    """Run the planning Monte Carlo for a site."""
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
    inside_pts = sample_region(permitted, spacing=3.0, edge_spacing=0.5)
    global_pts = grid_over(_bounds(permitted, rx, pad=30.0), 2.5)
    edges = []
    for zid, a, b, normal in _outline_edges(site):
        t = np.linspace(0.1, 0.9, 5)[:, None]
        along = a + t * (b - a)
        rate_out = _evidence_rate(site, along + normal * 10.0, trials, rng, inside_pts, global_pts, permitted)
        rate_in = _evidence_rate(site, along - normal * 2.0, trials, rng, inside_pts, global_pts, permitted)
        t_detect = np.where(rate_out > 0, RULES.evidence_chi2 / np.maximum(rate_out, 1e-9), np.inf)
        edges.append(EdgeReport(zid, (float(a[0]), float(a[1])), (float(b[0]), float(b[1])),
                                float(np.mean(t_detect <= 30.0)), float(np.mean(rate_in > 0))))
    order = np.argsort(-np.where(inside, grid_err, -1))[:3]
    weak = [(float(grid[i, 0]), float(grid[i, 1]), float(grid_err[i])) for i in order if inside[i]]
    suggestion, gain = _suggest(site, rx, grid[inside] if inside.any() else grid, bounds)
    return PlanReport(float(np.median(in_err)), float(np.percentile(in_err, 90)), edges, weak, suggestion, gain,
                      grid, grid_err)


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
    ax.set_title(f"{site.site.id}: error p50 {report.err_p50:.1f} m, p90 {report.err_p90:.1f} m, "
                 f"score {report.score:.2f}")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, east)")
    ax.set_ylabel("y (m, north)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def format_report(site: SiteConfig, r: PlanReport) -> str:
    """The text `plan` prints."""
    lines = [f"site {site.site.id}: {len(site.receivers)} receivers, {len(site.beacons)} beacons, "
             f"shadowing {site.radio.shadowing_db} dB, exponent {site.radio.path_loss_exponent}",
             f"expected localisation error inside permitted zones: p50 {r.err_p50:.1f} m, p90 {r.err_p90:.1f} m",
             "fence edges (recall: share of spots 10 m out where the breach evidence builds within 30 s;",
             "             false: share of spots 2 m in where outside-evidence would build up at all):"]
    for e in r.edges:
        flag = "  <- weak" if e.recall < 0.8 or e.false_rate > 0.0 else ""
        lines.append(f"  {e.zone:12s} ({e.a[0]:.0f},{e.a[1]:.0f})-({e.b[0]:.0f},{e.b[1]:.0f}): "
                     f"recall {e.recall:5.1%}  false {e.false_rate:5.1%}{flag}")
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
) -> None:
    """Expected localisation error, breach recall and false alarms per fence edge, and where to add a receiver."""
    try:
        site = load_site_config(config)
        report = make_plan(site, seed=seed)
    except ConfigError as err:
        typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(site, report))
    if out is not None:
        render_png(site, report, out)
        typer.echo(f"heat map written to {out}")
