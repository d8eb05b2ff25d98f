"""Escape scripts for the breach benchmark (issue 16): where an escapee goes and when, with ground truth.

Kinds (each over the fence or through the gate):

* ``walk``: out along the fence's outward normal to ~40 m, then on along the fence, walking the
  whole time (the moving flag is set by walking);
* ``stand``: out 20–35 m beyond the allowed area, then standing still or wandering within 5 m
  (meeting someone, smoking, waiting for a lift); the moving flag comes only from fidgets, about a
  third of the adverts;
* ``return``: the same, then back inside 2–4 minutes after the crossing (the clear must follow);
* ``range``: straight out to 200 m and staying there (out of radio range).

Distances out are distances to the band's allowed area (the union of its allowed zones), not along
the route: in an L-shaped layout a point 25 m along the normal from the inner corner's wall can be
2 m from the other arm. The route to the fence stays inside the allowed area (through one inside
waypoint where the straight line would cut a corner), so the only crossing is the one scripted.
Built on `edge.sim.scenarios` (home zones, random walks, `BandScript`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from edge.bands.geometry import FloatArray, ZoneMap, ZoneShape, as_points, grid_over
from edge.sim.mobility import Mover, RandomWalk, Route, Switch
from edge.sim.scenarios import ESCAPE_SPEED, BandScript, band_rng, home_polygon
from protocols.site_config import SiteConfig

KINDS = ("walk", "stand", "return", "range")
HOWS = ("fence", "gate")
STAND_OUT_M = (20.0, 35.0)
WANDER_RADIUS_M = 5.0
RETURN_AFTER_S = (120.0, 240.0)
RANGE_OUT_M = 200.0
WALK_OUT_M = 40.0
STAND_FIDGET = 1.0 / 3.0  # share of a stander's adverts with the moving flag
WANDER_FIDGET = 0.25  # a wanderer's short steps set the flag too: about a third in all
INSIDE_AFTER_RETURN_M = 4.0


@dataclass(frozen=True)
class Escape:
    """One scripted escape and its ground truth (times in seconds since the simulation start)."""

    band: int
    kind: str
    how: str
    cross_at: float  # leaves the allowed area
    cross: tuple[float, float]  # the fence point it crosses
    stand: tuple[float, float] | None  # where it stands / wanders (stand, return, range)
    out_m: float  # distance of `stand` (walk: of the turning point) to the allowed area
    wander: bool  # wanders within WANDER_RADIUS_M instead of standing still
    reentry_at: float | None  # back inside (return)
    script: BandScript


class AllowedArea:
    """The union of a band's allowed zones: inside tests, distance out, fence points with normals."""

    def __init__(self, site: SiteConfig, allowed: list[str]) -> None:
        polys = {z.id: as_points(z.polygon) for z in site.zones}
        self.polys = [polys[z] for z in allowed]
        self.zones = ZoneMap([ZoneShape(z, "permitted", polys[z]) for z in allowed])
        self.gates = [as_points(z.polygon) for z in site.zones if z.kind == "restricted"]

    def out_m(self, pts: FloatArray) -> FloatArray:
        """Signed distance to the union (positive outside)."""
        sd = self.zones.signed_distances(as_points(pts))
        return np.asarray(sd.min(axis=1))

    def inside(self, pts: FloatArray) -> np.ndarray:
        return np.asarray(self.out_m(pts) <= 0.0)

    def segment_inside(self, a: FloatArray, b: FloatArray, step: float = 0.5) -> bool:
        n = max(math.ceil(float(np.linalg.norm(b - a)) / step), 1)
        t = np.linspace(0.0, 1.0, n + 1)[:, None]
        return bool(self.inside(a[None, :] + t * (b - a)[None, :]).all())

    def fence_points(self, spacing: float = 0.5) -> tuple[FloatArray, FloatArray]:
        """Points on the union's outer boundary (not within 1 m of a corner) and their outward normals."""
        pts, normals = [], []
        for poly in self.polys:
            for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
                length = float(np.linalg.norm(b - a))
                if length < 2.5:
                    continue
                t = np.arange(1.0, length - 1.0 + 1e-9, spacing) / length
                p = a[None, :] + t[:, None] * (b - a)[None, :]
                n = np.array([(b - a)[1], -(b - a)[0]]) / length
                for sign in (1.0, -1.0):
                    out = self.out_m(p + sign * 0.5 * n) > 0.25
                    inn = self.inside(p - sign * 0.5 * n)
                    keep = out & inn
                    pts.append(p[keep])
                    normals.append(np.repeat((sign * n)[None, :], int(keep.sum()), axis=0))
        return np.concatenate(pts), np.concatenate(normals)


def _ray_to(area: AllowedArea, p: FloatArray, n: FloatArray, target_m: float) -> float | None:
    """Distance along the ray p + L·n at which the point is `target_m` out, if every point on the way
    beyond 0.5 m is outside; None if the ray does not get that far out (it runs into another arm)."""
    ls = np.arange(0.5, 3.0 * target_m + 10.0, 0.5)
    d = area.out_m(p[None, :] + ls[:, None] * n[None, :])
    if not (d > 0).all():
        bad = int(np.argmin(d > 0))
        ls, d = ls[:bad], d[:bad]
    hit = np.nonzero(d >= target_m)[0]
    return float(ls[hit[0]]) if len(hit) else None


def _waypoint(area: AllowedArea, start: FloatArray, inner: FloatArray) -> list[FloatArray]:
    """[] if the straight line start → inner stays inside, else one inside waypoint that makes it so."""
    if area.segment_inside(start, inner):
        return []
    lo = np.min([p.min(axis=0) for p in area.polys], axis=0)
    hi = np.max([p.max(axis=0) for p in area.polys], axis=0)
    grid = grid_over((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), 2.0)
    grid = grid[area.out_m(grid) <= -1.0]
    cost = np.linalg.norm(grid - start, axis=1) + np.linalg.norm(grid - inner, axis=1)
    for i in np.argsort(cost):
        w = grid[i]
        if area.segment_inside(start, w) and area.segment_inside(w, inner):
            return [w]
    raise ValueError("escape: no inside route from the band's position to the fence")


def _wander_points(rng: np.random.Generator, centre: FloatArray, t0: float, t1: float,
                   wander: bool) -> tuple[list[float], list[FloatArray]]:
    """Timed waypoints standing at `centre` until t1, or wandering within WANDER_RADIUS_M of it."""
    times, pts = [t0], [centre]
    if not wander:
        return [t0, t1], [centre, centre]
    t, here = t0, centre
    while t < t1:
        t += float(rng.uniform(15.0, 60.0))  # stand a while
        times.append(t)
        pts.append(here)
        ang, r = rng.uniform(0, 2 * math.pi), WANDER_RADIUS_M * math.sqrt(rng.uniform(0, 1))
        nxt = centre + r * np.array([math.cos(ang), math.sin(ang)])
        t += max(float(np.linalg.norm(nxt - here)) / float(rng.uniform(0.4, 0.8)), 0.5)  # a few slow steps
        times.append(t)
        pts.append(nxt)
        here = nxt
    return times, pts


def _route_in(area: AllowedArea, start: FloatArray, inner: FloatArray, cross: FloatArray,
              cross_at: float) -> tuple[list[float], list[FloatArray]]:
    """Timed waypoints from `start` through `inner` to `cross`, arriving at `cross` at `cross_at`."""
    pts = [start, *_waypoint(area, start, inner), inner, cross]
    lengths = [float(np.linalg.norm(b - a)) for a, b in itertools.pairwise(pts)]
    times = [cross_at]
    for length in reversed(lengths):
        times.insert(0, times[0] - length / ESCAPE_SPEED)
    return times, pts


def make_escape(site: SiteConfig, band_id: int, seed: int, *, kind: str, how: str, cross_at: float,
                duration_s: float = 1e6) -> Escape:
    """Script one escape of `band_id` crossing the fence at `cross_at` (deterministic in seed, band)."""
    if kind not in KINDS or how not in HOWS:
        raise ValueError(f"escape: kind must be one of {KINDS}, how one of {HOWS}")
    band = next(b for b in site.bands if b.id == band_id)
    area = AllowedArea(site, list(band.allowed_zones))
    rng = band_rng(seed, band_id, f"escape-{kind}-{how}")
    poly = home_polygon(site, band_id, seed)
    walk = RandomWalk(poly, band_rng(seed, band_id, "walk"))
    target = {"stand": float(rng.uniform(*STAND_OUT_M)), "return": float(rng.uniform(*STAND_OUT_M)),
              "range": RANGE_OUT_M, "walk": WALK_OUT_M}[kind]
    fence, normals = area.fence_points()
    if how == "gate" and area.gates:
        gc = min(area.gates, key=lambda g: float(np.min(area.out_m(g)))).mean(axis=0)
        near = np.linalg.norm(fence - gc, axis=1) <= 2.0
        order = np.argsort(np.linalg.norm(fence - gc, axis=1))
    else:
        near = np.zeros(len(fence), dtype=bool)
        for g in area.gates:  # over the fence means not through the gate
            near |= np.linalg.norm(fence - g.mean(axis=0), axis=1) <= 4.0
        order = np.argsort(np.linalg.norm(fence - np.asarray(walk.position(cross_at - 40.0)), axis=1))
    for i in order:
        if how == "fence" and near[i]:
            continue
        reach = _ray_to(area, fence[i], normals[i], target)
        if reach is not None:
            cross, normal = fence[i], normals[i]
            break
    else:
        raise ValueError(f"escape: no fence point of band {band_id} leads {target:.0f} m out")
    inner = cross - normal * 1.0
    times, pts = _route_in(area, np.asarray(walk.position(cross_at - 40.0)), inner, cross, cross_at)
    leave_at = times[0]
    times, pts = _route_in(area, np.asarray(walk.position(leave_at)), inner, cross, cross_at)
    stand = cross + normal * reach
    t_out = cross_at + reach / ESCAPE_SPEED
    times.append(t_out)
    pts.append(stand)
    wander = kind in ("stand", "return") and bool(rng.random() < 0.5)
    reentry: float | None = None
    fidget = 0.4
    after: Mover | None = None
    if kind == "walk":
        along = np.array([-normal[1], normal[0]])
        side = max((1.0, -1.0), key=lambda s: float(area.out_m(stand[None, :] + s * 60.0 * along[None, :])[0]))
        times.append(t_out + 400.0 / ESCAPE_SPEED)
        pts.append(stand + side * 400.0 * along)
    elif kind in ("stand", "range"):
        end = max(duration_s, t_out + 1.0)
        tw, pw = _wander_points(rng, stand, t_out, end, wander)
        times += tw[1:]
        pts += pw[1:]
        fidget = WANDER_FIDGET if wander else STAND_FIDGET
    else:  # return
        back_at = cross_at + float(rng.uniform(*RETURN_AFTER_S))
        # Stand or wander, then walk back to the crossing point, arriving there at back_at.
        until = back_at - (reach + WANDER_RADIUS_M) / ESCAPE_SPEED - 1.0
        tw, pw = _wander_points(rng, stand, t_out, until, wander)
        keep = [k for k, t in enumerate(tw) if t <= until]
        times += [tw[k] for k in keep[1:]]
        pts += [pw[k] for k in keep[1:]]
        here = pts[-1]
        times.append(back_at - float(np.linalg.norm(here - cross)) / ESCAPE_SPEED)
        pts.append(here)
        times.append(back_at)
        pts.append(cross)
        home = cross - normal * INSIDE_AFTER_RETURN_M
        times.append(back_at + INSIDE_AFTER_RETURN_M / ESCAPE_SPEED)
        pts.append(home)
        reentry = back_at
        zone = next((p for p in area.polys if bool(ZoneMap([ZoneShape("z", "permitted", p)])
                                                      .signed_distances(home[None, :])[0, 0] < 0)), poly)
        after = RandomWalk(zone, band_rng(seed, band_id, "after-return"), start=(float(home[0]), float(home[1])))
        fidget = WANDER_FIDGET if wander else STAND_FIDGET
    route = Route(times, [list(map(float, p)) for p in pts])
    mover: Mover = Switch(walk, route, leave_at) if leave_at > 0 else route
    if after is not None:
        mover = Switch(mover, _Shifted(after, times[-1]), times[-1])
    script = BandScript(mover=mover, escape_at=cross_at, fidget=fidget)
    return Escape(band=band_id, kind=kind, how=how if area.gates else "fence", cross_at=cross_at,
                  cross=(float(cross[0]), float(cross[1])),
                  stand=None if kind == "walk" else (float(stand[0]), float(stand[1])),
                  out_m=float(area.out_m(stand[None, :])[0]), wander=wander, reentry_at=reentry, script=script)


class _Shifted:
    """A mover started at `t0`: its own time 0 is `t0` (a walk that begins where the return ends)."""

    def __init__(self, inner: Mover, t0: float) -> None:
        self.inner, self.t0 = inner, t0

    def position(self, t: float) -> tuple[float, float]:
        return self.inner.position(t - self.t0)

    def speed(self, t: float) -> float:
        return self.inner.speed(t - self.t0)
