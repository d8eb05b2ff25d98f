"""How simulated people move: random walks inside their zones, standing still, scripted routes.

Every mover is deterministic for its seed and answers `position(t)` for t in seconds since the
scenario start, in any order (a walk extends itself lazily and keeps its whole history).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge.bands.geometry import FloatArray, distance_to_boundary, point_in_polygon

WALK_SPEED = (0.6, 1.4)  # m/s
PAUSE_S = (5.0, 180.0)


class Mover(Protocol):
    """A path through the site."""

    def position(self, t: float) -> tuple[float, float]:
        """Where the person is at `t` seconds after the scenario start."""
        ...

    def speed(self, t: float) -> float:
        """Walking speed at `t` (m/s), for the band's accelerometer flag."""
        ...


@dataclass(frozen=True, slots=True)
class Still:
    """Stands at one point."""

    x: float
    y: float

    def position(self, t: float) -> tuple[float, float]:
        return self.x, self.y

    def speed(self, t: float) -> float:
        return 0.0


class Route:
    """Piecewise-linear route through timed waypoints; stands at the ends outside their times."""

    def __init__(self, times: Sequence[float], points: Sequence[Sequence[float]]) -> None:
        self.t = np.asarray(times, dtype=np.float64)
        self.p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(self.t) != len(self.p) or len(self.t) == 0 or np.any(np.diff(self.t) < 0):
            raise ValueError("a route needs increasing times, one per point")

    def position(self, t: float) -> tuple[float, float]:
        return float(np.interp(t, self.t, self.p[:, 0])), float(np.interp(t, self.t, self.p[:, 1]))

    def speed(self, t: float) -> float:
        i = int(np.searchsorted(self.t, t, side="right"))
        if i <= 0 or i >= len(self.t):
            return 0.0
        dt = self.t[i] - self.t[i - 1]
        return float(np.linalg.norm(self.p[i] - self.p[i - 1]) / dt) if dt > 0 else 0.0


class Switch:
    """One mover until `at`, another after (e.g. a walk, then an escape route)."""

    def __init__(self, first: Mover, then: Mover, at: float) -> None:
        self.first, self.then, self.at = first, then, at

    def position(self, t: float) -> tuple[float, float]:
        return (self.first if t < self.at else self.then).position(t)

    def speed(self, t: float) -> float:
        return (self.first if t < self.at else self.then).speed(t)


class RandomWalk:
    """Random waypoints inside one polygon, walking at 0.6-1.4 m/s with pauses between legs."""

    def __init__(self, polygon: FloatArray, rng: np.random.Generator, *, margin_m: float = 1.0,
                 start: tuple[float, float] | None = None) -> None:
        self.poly = np.asarray(polygon, dtype=np.float64)
        self.rng = rng
        self.margin = margin_m
        p0 = start if start is not None else self._random_point()
        # Segments: (t0, x0, y0, t1, x1, y1); a pause is a segment with the same ends.
        self._t0: list[float] = [-1e9]
        self._seg: list[tuple[float, float, float, float, float, float]] = [
            (-1e9, p0[0], p0[1], float(rng.uniform(*PAUSE_S)) * rng.random(), p0[0], p0[1])
        ]

    def _random_point(self) -> tuple[float, float]:
        lo, hi = self.poly.min(axis=0), self.poly.max(axis=0)
        for _ in range(200):
            p = self.rng.uniform(lo, hi)
            if point_in_polygon(p[None, :], self.poly)[0] and distance_to_boundary(p[None, :], self.poly)[0] >= min(
                self.margin, 0.25 * float(np.min(hi - lo))
            ):
                return float(p[0]), float(p[1])
        c = self.poly.mean(axis=0)
        return float(c[0]), float(c[1])

    def _extend(self, until: float) -> None:
        while self._seg[-1][3] <= until:
            _, _, _, t1, x1, y1 = self._seg[-1]
            if self._seg[-1][1:3] != (x1, y1):  # just walked: pause
                dur = float(self.rng.uniform(*PAUSE_S))
                self._append((t1, x1, y1, t1 + dur, x1, y1))
                continue
            x2, y2 = self._random_point()
            v = float(self.rng.uniform(*WALK_SPEED))
            dur = max(math.hypot(x2 - x1, y2 - y1) / v, 0.5)
            self._append((t1, x1, y1, t1 + dur, x2, y2))

    def _append(self, seg: tuple[float, float, float, float, float, float]) -> None:
        self._t0.append(seg[0])
        self._seg.append(seg)

    def _segment(self, t: float) -> tuple[float, float, float, float, float, float]:
        self._extend(t)
        i = bisect.bisect_right(self._t0, t) - 1
        return self._seg[max(i, 0)]

    def position(self, t: float) -> tuple[float, float]:
        t0, x0, y0, t1, x1, y1 = self._segment(t)
        f = 0.0 if t1 <= t0 else min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        return x0 + (x1 - x0) * f, y0 + (y1 - y0) * f

    def speed(self, t: float) -> float:
        t0, x0, y0, t1, x1, y1 = self._segment(t)
        return 0.0 if t1 <= t0 else math.hypot(x1 - x0, y1 - y0) / (t1 - t0)
