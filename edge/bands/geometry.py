"""Plane geometry for zones: point-in-polygon and signed distance to a zone edge (numpy, vectorised).

Coordinates are metres in the site frame. A signed distance is negative inside a polygon and
positive outside, so "outside every allowed zone by more than the error margin" is one comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.bands.jit import kernel

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def as_points(points: Sequence[Sequence[float]] | FloatArray) -> FloatArray:
    """Coerce to a float (N, 2) array."""
    arr = np.asarray(points, dtype=np.float64)
    return arr.reshape(-1, 2)


def point_in_polygon(points: FloatArray, polygon: FloatArray) -> BoolArray:
    """Even-odd ray casting for many points against one polygon; points on an edge count as either."""
    pts = as_points(points)
    poly = as_points(polygon)
    x = pts[:, 0:1]
    y = pts[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)
    dy = np.where(y2 == y1, 1.0, y2 - y1)
    x_at = x1 + (y - y1) * (x2 - x1) / dy
    hits = crosses & (x < x_at)
    return np.asarray(np.count_nonzero(hits, axis=1) % 2 == 1)


def distance_to_boundary(points: FloatArray, polygon: FloatArray) -> FloatArray:
    """Unsigned distance from each point to the polygon's nearest edge."""
    pts = as_points(points)
    a = as_points(polygon)
    b = np.roll(a, -1, axis=0)
    ab = b - a
    len2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    ap = pts[:, None, :] - a[None, :, :]
    t = np.clip(np.einsum("nej,ej->ne", ap, ab) / len2, 0.0, 1.0)
    nearest = a[None, :, :] + t[:, :, None] * ab[None, :, :]
    d = np.linalg.norm(pts[:, None, :] - nearest, axis=2)
    return np.asarray(d.min(axis=1))


def signed_distance(points: FloatArray, polygon: FloatArray) -> FloatArray:
    """Distance to the polygon's edge: negative inside, positive outside."""
    d = distance_to_boundary(points, polygon)
    inside = point_in_polygon(points, polygon)
    return np.where(inside, -d, d)


@dataclass(frozen=True, slots=True)
class ZoneShape:
    """One zone's polygon with its ID and kind (``permitted`` or ``restricted``)."""

    id: str
    kind: str
    polygon: FloatArray

    @property
    def centroid(self) -> tuple[float, float]:
        """Vertex mean: good enough to aim a walk at a small zone such as a gate."""
        c = self.polygon.mean(axis=0)
        return float(c[0]), float(c[1])


class ZoneMap:
    """All zones of a site; answers signed distances for many points at once."""

    def __init__(self, zones: Sequence[ZoneShape]) -> None:
        self.zones = list(zones)
        self.index = {z.id: i for i, z in enumerate(self.zones)}
        # All edges of all zones in one array, so one pass answers every point against every zone.
        a = [z.polygon for z in self.zones]
        self._a = np.concatenate(a) if a else np.zeros((0, 2))
        self._b = np.concatenate([np.roll(p, -1, axis=0) for p in a]) if a else np.zeros((0, 2))
        self._starts = np.cumsum([0] + [len(p) for p in a[:-1]]).astype(np.int64) if a else np.zeros(0, np.int64)
        self._zone_of_edge = np.repeat(np.arange(len(a)), [len(p) for p in a]) if a else np.zeros(0, np.int64)

    def signed_distances(self, points: FloatArray) -> FloatArray:
        """(N, Z) signed distance of each point to each zone."""
        pts = as_points(points)
        if not self.zones:
            return np.zeros((len(pts), 0))
        a, b = self._a, self._b
        ab = b - a
        len2 = np.maximum((ab**2).sum(axis=1), 1e-12)
        ap = pts[:, None, :] - a[None, :, :]
        t = np.clip((ap * ab[None, :, :]).sum(axis=2) / len2, 0.0, 1.0)
        d = np.sqrt(((ap - t[..., None] * ab[None, :, :]) ** 2).sum(axis=2))
        dist = np.minimum.reduceat(d, self._starts, axis=1)
        x, y = pts[:, 0:1], pts[:, 1:2]
        crosses = (a[None, :, 1] > y) != (b[None, :, 1] > y)
        dy = np.where(b[:, 1] == a[:, 1], 1.0, b[:, 1] - a[:, 1])
        x_at = a[None, :, 0] + (y - a[None, :, 1]) * (ab[None, :, 0] / dy[None, :])
        hits = (crosses & (x < x_at)).astype(np.int64)
        inside = np.add.reduceat(hits, self._starts, axis=1) % 2 == 1
        return np.asarray(np.where(inside, -dist, dist))

    def classify(self, points: FloatArray, allowed: BoolArray, restricted: BoolArray,
                 is_band: BoolArray) -> tuple[FloatArray, NDArray[np.int64], FloatArray, NDArray[np.int64]]:
        """One compiled pass per point (same maths as the numpy methods): signed distances (N, Z),
        `containing`'s zone index (-1 = none), the signed distance to the point's allowed union
        (`union_signed_distance` with mask `allowed` (N, Z); 0 where not `is_band`) and the first
        restricted zone it is inside that is not allowed to it (-1 = none; bands only).
        """
        pts = np.ascontiguousarray(as_points(points))
        n, z = len(pts), len(self.zones)
        sd = np.empty((n, z))
        zone = np.empty(n, dtype=np.int64)
        out = np.empty(n)
        first_r = np.empty(n, dtype=np.int64)
        stops = np.append(self._starts[1:], len(self._a)).astype(np.int64) if z else np.zeros(0, np.int64)
        _classify(pts, self._a, self._b, self._starts, stops, np.ascontiguousarray(allowed, dtype=np.bool_),
                  np.ascontiguousarray(restricted, dtype=np.bool_), np.ascontiguousarray(is_band, dtype=np.bool_),
                  sd, zone, out, first_r)
        return sd, zone, out, first_r

    def union_signed_distance(self, sd: FloatArray, mask: BoolArray) -> FloatArray:
        """Signed distance to the union of the zones selected by `mask` ((Z,) or (N, Z)).

        Outside: distance to the nearest selected zone. Inside: depth in the deepest selected zone,
        which under-states depth where zones touch (conservative for clearing a breach).
        Points with no selected zone get +inf (everywhere is outside).
        """
        m = np.broadcast_to(mask, sd.shape)
        big = np.where(m, sd, np.inf)
        return np.asarray(big.min(axis=1))

    def containing(self, sd: FloatArray) -> list[str | None]:
        """Per point: the zone it is deepest inside, restricted zones first, else None."""
        if sd.shape[1] == 0:
            return [None] * len(sd)
        restricted = np.array([z.kind == "restricted" for z in self.zones], dtype=bool)
        inside = sd < 0
        # Restricted zones win: push permitted depths behind any restricted one.
        key = np.where(inside, sd, np.inf) - np.where(inside & restricted[None, :], 1e6, 0.0)
        idx = np.argmin(key, axis=1)
        any_in: list[bool] = np.asarray(inside.any(axis=1)).tolist()
        ids = [z.id for z in self.zones]
        return [ids[i] if ok else None for i, ok in zip(idx.tolist(), any_in, strict=True)]

    def bounds(self, extra: FloatArray | None = None, pad: float = 0.0) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of every zone vertex (and `extra` points), padded."""
        parts = [z.polygon for z in self.zones]
        if extra is not None and len(extra):
            parts.append(as_points(extra))
        allp = np.concatenate(parts, axis=0) if parts else np.zeros((1, 2))
        lo = allp.min(axis=0) - pad
        hi = allp.max(axis=0) + pad
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


@kernel
def _classify(pts: FloatArray, a: FloatArray, b: FloatArray, starts: NDArray[np.int64], stops: NDArray[np.int64],
              allowed: BoolArray, restricted: BoolArray, is_band: BoolArray, sd: FloatArray,
              zone: NDArray[np.int64], out: FloatArray, first_r: NDArray[np.int64]) -> None:
    """`ZoneMap.classify` point by point (into sd/zone/out/first_r)."""
    for i in range(pts.shape[0]):
        x, y = pts[i, 0], pts[i, 1]
        best_key = math.inf
        zone[i] = -1
        first_r[i] = -1
        out[i] = math.inf if is_band[i] else 0.0
        for zi in range(starts.shape[0]):
            dmin = math.inf
            hits = 0
            for e in range(starts[zi], stops[zi]):
                abx, aby = b[e, 0] - a[e, 0], b[e, 1] - a[e, 1]
                len2 = max(abx * abx + aby * aby, 1e-12)
                apx, apy = x - a[e, 0], y - a[e, 1]
                t = min(max((apx * abx + apy * aby) / len2, 0.0), 1.0)
                dx, dy = apx - t * abx, apy - t * aby
                dmin = min(dmin, math.sqrt(dx * dx + dy * dy))
                if (a[e, 1] > y) != (b[e, 1] > y):
                    dy_e = 1.0 if b[e, 1] == a[e, 1] else b[e, 1] - a[e, 1]
                    if x < a[e, 0] + (y - a[e, 1]) * (abx / dy_e):
                        hits += 1
            inside = hits % 2 == 1
            d = -dmin if inside else dmin
            sd[i, zi] = d
            if d < 0:
                key = d - (1e6 if restricted[zi] else 0.0)
                if key < best_key:
                    best_key, zone[i] = key, zi
                if is_band[i] and restricted[zi] and not allowed[i, zi] and first_r[i] < 0:
                    first_r[i] = zi
            if is_band[i] and allowed[i, zi]:
                out[i] = min(out[i], d)


def sample_region(polygons: Sequence[FloatArray], spacing: float = 1.0, edge_spacing: float = 0.5) -> FloatArray:
    """Candidate points covering the union of `polygons`: a grid inside plus points along every edge.

    Used to find the best explanation of a band's RSSI "somewhere inside the allowed area".
    """
    parts: list[FloatArray] = []
    for poly in polygons:
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        gx, gy = np.meshgrid(np.arange(lo[0], hi[0] + 1e-9, spacing), np.arange(lo[1], hi[1] + 1e-9, spacing))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        parts.append(grid[point_in_polygon(grid, poly)])
        for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            steps = max(int(np.ceil(np.linalg.norm(b - a) / edge_spacing)), 1)
            t = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]
            parts.append(a + t * (b - a))
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 2))


def grid_over(bounds: tuple[float, float, float, float], spacing: float) -> FloatArray:
    """A regular grid of points covering (xmin, ymin, xmax, ymax)."""
    xmin, ymin, xmax, ymax = bounds
    gx, gy = np.meshgrid(np.arange(xmin, xmax + 1e-9, spacing), np.arange(ymin, ymax + 1e-9, spacing))
    return np.stack([gx.ravel(), gy.ravel()], axis=1)
