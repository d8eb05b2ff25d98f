"""Scenarios: what each simulated band does (where it walks, its flags, when it goes silent).

Times are seconds since the simulation start. Builders here cover the cases the benchmarks and
the demo need: people walking in their zones, standing near a fence, and escaping through a
gate, over a fence, or out of radio range.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from edge.bands.geometry import FloatArray, as_points, distance_to_boundary, point_in_polygon
from edge.sim.mobility import Mover, RandomWalk, Route, Still, Switch
from protocols.site_config import SiteConfig

Interval = tuple[float, float]
ESCAPE_SPEED = 1.3  # m/s


def in_any(t: float, intervals: tuple[Interval, ...]) -> bool:
    """True if t lies in one of the half-open intervals."""
    return any(a <= t < b for a, b in intervals)


@dataclass(frozen=True)
class BandScript:
    """One band's behaviour over the simulation."""

    mover: Mover
    strap_open: tuple[Interval, ...] = ()
    sos: tuple[Interval, ...] = ()
    fever: tuple[Interval, ...] = ()
    silent: tuple[Interval, ...] = ()  # not advertising (band destroyed, shielded, flat battery)
    charging: tuple[Interval, ...] = ()
    still: tuple[Interval, ...] = ()  # accelerometer reports no activity at all
    fidget: float = 0.4  # share of a standing band's adverts with the moving flag (hands, shifting weight)
    battery_start: float = 90.0
    battery_drain_per_h: float = 0.5
    base_temp_c: float = 36.4
    escape_at: float | None = None  # ground truth for benchmarks: when the person left


@dataclass
class Scenario:
    """Scripts per band; bands without one get `default(band_id)`, beacons stand still."""

    scripts: dict[int, BandScript] = field(default_factory=dict)
    default: Callable[[int], BandScript] | None = None

    def script(self, band_id: int, fallback: Callable[[int], BandScript]) -> BandScript:
        """The band's script, created on first use and then fixed."""
        s = self.scripts.get(band_id)
        if s is None:
            s = (self.default or fallback)(band_id)
            self.scripts[band_id] = s
        return s


def band_rng(seed: int, band_id: int, salt: str = "") -> np.random.Generator:
    """A generator that depends only on (seed, band, salt), so scenarios are reproducible."""
    return np.random.default_rng([seed & 0xFFFFFFFF, band_id, zlib.crc32(salt.encode())])


def zone_polygons(site: SiteConfig) -> dict[str, FloatArray]:
    """Zone ID -> (N, 2) polygon."""
    return {z.id: as_points(z.polygon) for z in site.zones}


def home_polygon(site: SiteConfig, band_id: int, seed: int) -> FloatArray:
    """The permitted zone this band lives in (one of its allowed zones, chosen by seed)."""
    polys = zone_polygons(site)
    band = next((b for b in site.bands if b.id == band_id), None)
    zones = band.allowed_zones if band else [z.id for z in site.zones if z.kind == "permitted"]
    areas = np.array([_area(polys[z]) for z in zones])
    pick = band_rng(seed, band_id, "home").choice(len(zones), p=areas / areas.sum())
    return polys[zones[int(pick)]]


def _area(poly: FloatArray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return max(abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0, 1e-6)


def walking(site: SiteConfig, seed: int = 0) -> Scenario:
    """Everyone walks around their own zone."""

    def make(band_id: int) -> BandScript:
        rng = band_rng(seed, band_id, "walk")
        return BandScript(mover=RandomWalk(home_polygon(site, band_id, seed), rng),
                          battery_start=float(rng.uniform(40, 100)))

    return Scenario(default=make)


def near_edge_point(poly: FloatArray, rng: np.random.Generator, inside_m: float) -> tuple[float, float]:
    """A random point `inside_m` metres inside the polygon's edge (on a random edge)."""
    n = len(poly)
    lengths = np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1)
    for _ in range(100):
        i = int(rng.choice(n, p=lengths / lengths.sum()))
        a, b = poly[i], poly[(i + 1) % n]
        p = a + (b - a) * rng.uniform(0.1, 0.9)
        normal = np.array([-(b - a)[1], (b - a)[0]]) / max(float(np.linalg.norm(b - a)), 1e-9)
        for sign in (1.0, -1.0):
            q = p + sign * normal * inside_m
            if point_in_polygon(q[None, :], poly)[0] and distance_to_boundary(q[None, :], poly)[0] >= inside_m * 0.9:
                return float(q[0]), float(q[1])
    c = poly.mean(axis=0)
    return float(c[0]), float(c[1])


def standing_near_fence(site: SiteConfig, band_id: int, seed: int, inside_m: float) -> BandScript:
    """Stands `inside_m` metres inside the home zone's edge for the whole run."""
    rng = band_rng(seed, band_id, "fence")
    x, y = near_edge_point(home_polygon(site, band_id, seed), rng, inside_m)
    return BandScript(mover=Still(x, y))


def _outward(poly: FloatArray, p: np.ndarray, allowed: list[FloatArray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest edge point of `poly` to p and the outward unit normal there.

    With `allowed`, only edges on the outer boundary of their union count: an edge shared with
    another allowed zone (block → yard) is not a fence, and leaving over it is not an escape.
    """
    n = len(poly)
    best = (math.inf, poly[0], np.array([1.0, 0.0]))
    centroid = poly.mean(axis=0)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ab = b - a
        t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.05, 0.95))
        q = a + t * ab
        d = float(np.linalg.norm(p - q))
        if d < best[0]:
            normal = np.array([ab[1], -ab[0]]) / max(float(np.linalg.norm(ab)), 1e-12)
            if np.dot(normal, q - centroid) < 0:
                normal = -normal
            probe = (q + normal * 0.5)[None, :]
            if allowed and any(bool(point_in_polygon(probe, other)[0]) for other in allowed):
                continue
            best = (d, q, normal)
    return best[1], best[2]


def _escape_route(start: tuple[float, float], inner: np.ndarray, cross: np.ndarray, direction: np.ndarray,
                  cross_at: float, out_m: float) -> Route:
    s = np.asarray(start)
    d1 = float(np.linalg.norm(inner - s))
    d2 = float(np.linalg.norm(cross - inner))
    t_inner = cross_at - d2 / ESCAPE_SPEED
    t_start = t_inner - d1 / ESCAPE_SPEED
    far = cross + direction * out_m
    return Route([t_start, t_inner, cross_at, cross_at + out_m / ESCAPE_SPEED],
                 np.stack([s, inner, cross, far]).tolist())


def escape(site: SiteConfig, band_id: int, seed: int, *, cross_at: float, how: str = "gate",
           out_m: float = 40.0) -> BandScript:
    """Walk in the home zone, then leave so that the fence is crossed at `cross_at` seconds.

    `how` is ``gate`` (through the nearest restricted zone), ``fence`` (straight over the
    nearest fence) or ``range`` (over the fence and on, out of radio range).
    """
    poly = home_polygon(site, band_id, seed)
    walk = RandomWalk(poly, band_rng(seed, band_id, "walk"))
    # Decide the route from where the walk would be a little before the crossing.
    probe_t = cross_at - 30.0
    start = walk.position(probe_t)
    gates = [as_points(z.polygon) for z in site.zones if z.kind == "restricted"]
    if how == "gate" and gates:
        gate = min(gates, key=lambda g: float(np.linalg.norm(g.mean(axis=0) - poly.mean(axis=0))))
        cross = gate.mean(axis=0)
        edge_pt, normal = _outward(poly, cross)
        inner = edge_pt - normal * 1.5
        direction = normal
    else:
        band = next((b for b in site.bands if b.id == band_id), None)
        polys = zone_polygons(site)
        allowed = [polys[z] for z in band.allowed_zones] if band else [poly]
        edge_pt, normal = _outward(poly, np.asarray(start), allowed)
        inner = edge_pt - normal * 1.0
        cross = edge_pt
        direction = normal
    if how == "range":
        out_m = max(out_m, 300.0)
    route = _escape_route(start, inner, cross, direction, cross_at, out_m)
    leave_at = float(route.t[0])
    if leave_at > 0:
        # Walk until the route starts, from wherever the walk is then.
        start = walk.position(leave_at)
        route = _escape_route(start, inner, cross, direction, cross_at, out_m)
        leave_at = float(route.t[0])
    mover: Mover = Switch(walk, route, leave_at) if leave_at > 0 else route
    return BandScript(mover=mover, escape_at=cross_at)


def demo_scenario(site: SiteConfig, *, escape_band: int, escape_at_s: float = 60.0, out_m: float = 25.0) -> Scenario:
    """Everyone walks; `escape_band` climbs a side fence `escape_at_s` in, walks `out_m` out and stands there.

    The commonest escape (issue 16): over a side fence (the east one of its home zone, or the nearest
    outer fence if that one is shared with another allowed zone), then standing or wandering a
    little, e.g. waiting for someone on the road.
    """
    sc = walking(site, seed=1)
    sc.scripts[escape_band] = side_fence_escape(site, escape_band, 1, cross_at=escape_at_s, out_m=out_m)
    return sc


def side_fence_escape(site: SiteConfig, band_id: int, seed: int, *, cross_at: float, out_m: float) -> BandScript:
    """Walk in the home zone, cross its east fence at `cross_at`, walk `out_m` straight out, then stand.

    The crossing is at the height of the middle of the whole allowed area (clipped into the home zone):
    over the side of the compound, as a person heading for the road would.
    """
    poly = home_polygon(site, band_id, seed)
    walk = RandomWalk(poly, band_rng(seed, band_id, "walk"))
    band = next((b for b in site.bands if b.id == band_id), None)
    polys = zone_polygons(site)
    allowed = [polys[z] for z in band.allowed_zones] if band else [poly]
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    every = np.concatenate(allowed)
    mid_y = (float(every[:, 1].min()) + float(every[:, 1].max())) / 2.0
    probe = np.array([hi[0] - 1.0, min(max(mid_y, lo[1] + 1.0), hi[1] - 1.0)])
    edge_pt, normal = _outward(poly, probe, allowed)
    inner = edge_pt - normal * 1.0
    start = walk.position(cross_at - 30.0)
    route = _escape_route(start, inner, edge_pt, normal, cross_at, out_m)
    leave_at = float(route.t[0])
    if leave_at > 0:
        start = walk.position(leave_at)
        route = _escape_route(start, inner, edge_pt, normal, cross_at, out_m)
        leave_at = float(route.t[0])
    mover: Mover = Switch(walk, route, leave_at) if leave_at > 0 else route
    return BandScript(mover=mover, escape_at=cross_at)


def with_events(script: BandScript, **events: tuple[Interval, ...]) -> BandScript:
    """A copy of `script` with extra flag intervals (strap_open=..., sos=..., silent=...)."""
    # replace() checks each keyword against its field's type; **events is typed as one value type for all.
    return replace(script, **events)  # type: ignore[arg-type]
