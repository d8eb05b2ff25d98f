"""Zone state machine of one camera (pure): change masks in, motion_start / motion_end out.

The motion detector (motion.py) decides which pixels changed and which of them belong to
tracks that behave like a person; this module turns that, frame by frame, into zone events:

- per zone, the changed fraction inside its polygon (masks removed) against `min_area`;
- `dwell_frames` frames to `motion_start`; one frame below `min_area` inside the run neither
  counts nor restarts it (a small or partly hidden person flickers around the limit); the
  first frame of new motion counts before it can pass the persistence test;
- `motion_start` only when confirmed person boxes cover `min_area` of the zone (when tracks
  are on); `motion_end` after the quiet period below half of `min_area`;
- motion outside every zone is a pseudo-zone with id "" (reported as `zone: null`, never alerted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from protocols.bounds import Range, check_bounds

Polygon = tuple[tuple[float, float], ...]
BBox = tuple[float, float, float, float]
Path = tuple[tuple[float, float], ...]

MOTION_START = "motion_start"
MOTION_END = "motion_end"

__all__ = ["MOTION_END", "MOTION_START", "BBox", "MotionEvent", "Polygon", "ZoneFrame", "ZoneSpec", "Zones",
           "rasterize"]


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A detection zone in relative image coordinates."""

    id: str
    polygon: Polygon
    min_area: float = 0.002
    dwell_frames: int = 3
    alert: bool = True

    def __post_init__(self) -> None:
        # The site config's ranges for camera zones (protocols.site_config.CameraZone).
        check_bounds(self, {"min_area": Range(gt=0, le=1), "dwell_frames": Range(ge=1, le=100)})


@dataclass(frozen=True, slots=True)
class MotionEvent:
    """One detector event; `zone` is None for motion outside every zone and for tamper."""

    kind: str
    zone: str | None
    ts: float
    frame: int
    bbox: BBox | None
    score: float | None
    reason: str | None = None  # tamper: covered | moved | defocused
    path: Path = ()  # motion_start: the track's foot points (relative), for evidence


@dataclass(frozen=True, slots=True)
class ZoneFrame:
    """What the zones see of one detect frame (all masks uint8 0/255 at the detect size).

    `fg`: cleaned change (None when nothing changed); `raw`: change before the persistence test
    (None when nothing changed); `person`: change of confirmed person tracks, or `fg` itself when
    tracks are off, or None.
    """

    fg: np.ndarray | None
    raw: np.ndarray | None
    person: np.ndarray | None


@dataclass(slots=True)
class _ZoneState:
    spec: ZoneSpec
    x0: int
    y0: int
    mask: np.ndarray  # uint8 0/255, cropped to the zone's bounding rect
    pixels: int
    active_run: int = 0
    gap: bool = False  # one frame below min_area inside the current run
    quiet_run: int = 0
    in_motion: bool = False
    peak_score: float = 0.0
    last_bbox: BBox | None = None


def rasterize(polys: tuple[Polygon, ...], w: int, h: int) -> np.ndarray:
    """Filled polygons (relative coordinates) as a uint8 0/255 mask."""
    img = np.zeros((h, w), np.uint8)
    for poly in polys:
        pts = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in poly], np.int32)
        if len(pts) >= 3:
            cv2.fillPoly(img, [pts], 255)
    return img


def _make_zone(spec: ZoneSpec, mask_full: np.ndarray) -> _ZoneState | None:
    ys, xs = np.nonzero(mask_full)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    crop = np.ascontiguousarray(mask_full[y0:y1, x0:x1])
    return _ZoneState(spec=spec, x0=x0, y0=y0, mask=crop, pixels=int(cv2.countNonZero(crop)))


class Zones:
    """The configured zones (and the outside pseudo-zone) of one camera; `step()` once per frame."""

    def __init__(self, zones: tuple[ZoneSpec, ...], valid: np.ndarray, quiet_frames: int,
                 outside: ZoneSpec | None, counters: dict[str, int]) -> None:
        """`valid`: uint8 mask of the unmasked picture; `outside`: the outside pseudo-zone's
        limits (id "", no polygon) or None; `counters` is shared with the detector."""
        h, w = valid.shape
        self.h, self.w = h, w
        self.quiet_frames = quiet_frames
        self.counters = counters
        self.counters.setdefault("motion_events", 0)
        self._zones: list[_ZoneState] = []
        union: np.ndarray = np.zeros((h, w), np.uint8)
        for z in zones:
            zm = cv2.bitwise_and(rasterize((z.polygon,), w, h), valid)
            union = cv2.bitwise_or(union, zm)
            st = _make_zone(z, zm)
            if st is not None:
                self._zones.append(st)
        if outside is not None:
            st = _make_zone(outside, cv2.bitwise_and(valid, cv2.bitwise_not(union)))
            if st is not None:
                self._zones.append(st)

    @property
    def busy(self) -> bool:
        """Motion open or building up in some zone (the tamper reference must not learn then)."""
        return any(z.in_motion or z.active_run for z in self._zones)

    def states(self) -> dict[str | None, bool]:
        """Zone id (None = outside) -> whether motion is open there."""
        return {(z.spec.id or None): z.in_motion for z in self._zones}

    def step(self, zf: ZoneFrame, ts: float, frame: int, path_of: Callable[[BBox | None], Path]) -> list[MotionEvent]:
        """One frame; `path_of(bbox)` gives the foot-point path of the track behind a new event."""
        out = []
        for z in self._zones:
            ev = self._zone_step(z, zf, ts, frame)
            if ev is not None:
                if ev.kind == MOTION_START:
                    ev = MotionEvent(ev.kind, ev.zone, ev.ts, ev.frame, ev.bbox, ev.score, path=path_of(ev.bbox))
                out.append(ev)
        return out

    def finish(self, ts: float, frame: int) -> list[MotionEvent]:
        """End every open motion event (end of a file, tamper)."""
        out = []
        for z in self._zones:
            if z.in_motion:
                z.in_motion = False
                out.append(self._event(MOTION_END, z, ts, frame, z.last_bbox, z.peak_score))
        return out

    def _zone_step(self, z: _ZoneState, zf: ZoneFrame, ts: float, frame: int) -> MotionEvent | None:
        h, w = z.mask.shape
        sl = (slice(z.y0, z.y0 + h), slice(z.x0, z.x0 + w))
        fg = zf.fg
        roi = cv2.bitwise_and(fg[sl], z.mask) if fg is not None else None
        score = cv2.countNonZero(roi) / z.pixels if roi is not None else 0.0
        # Events and their boxes come only from confirmed person tracks; the dwell count runs on all
        # change, so a person whose track is confirmed after the dwell frames fires at once.
        pers = zf.person
        proi = (roi if pers is fg else cv2.bitwise_and(pers[sl], z.mask)) if pers is not None and roi is not None \
            else None
        pscore = cv2.countNonZero(proi) / z.pixels if proi is not None else 0.0
        if score < z.spec.min_area and zf.raw is not None and z.active_run == 0:
            # The first frame of new motion cannot pass the persistence test yet; it still counts
            # towards dwell_frames, and the decision frame must pass it.
            raw_roi = cv2.bitwise_and(zf.raw[sl], z.mask)
            if cv2.countNonZero(raw_roi) / z.pixels >= z.spec.min_area:
                z.active_run = 1
                return None
        if roi is not None and max(score, pscore) >= z.spec.min_area:
            z.active_run += 1
            z.gap = False
            if proi is not None and pscore >= z.spec.min_area:
                z.quiet_run = 0
                z.last_bbox = self._bbox(proi, z)
                z.peak_score = max(z.peak_score, pscore)
                if not z.in_motion and z.active_run >= z.spec.dwell_frames:
                    z.in_motion = True
                    z.peak_score = pscore
                    return self._event(MOTION_START, z, ts, frame, z.last_bbox, pscore)
            if z.in_motion:
                return self._quiet_step(z, pscore, ts, frame)
            return None
        if z.active_run and not z.gap and not z.in_motion:
            # A small or low-contrast person flickers around min_area from frame to frame: one
            # frame below it does not restart the dwell count (it does not count towards it either).
            z.gap = True
        else:
            z.active_run, z.gap = 0, False
        return self._quiet_step(z, pscore, ts, frame) if z.in_motion else None

    def _quiet_step(self, z: _ZoneState, pscore: float, ts: float, frame: int) -> MotionEvent | None:
        if pscore >= 0.5 * z.spec.min_area:
            z.quiet_run = 0
            return None
        z.quiet_run += 1
        if z.quiet_run >= self.quiet_frames:
            z.in_motion = False
            z.quiet_run = 0
            return self._event(MOTION_END, z, ts, frame, z.last_bbox, z.peak_score)
        return None

    def _bbox(self, roi: np.ndarray, z: _ZoneState) -> BBox:
        x, y, bw, bh = cv2.boundingRect(roi)
        return (round((z.x0 + x) / self.w, 4), round((z.y0 + y) / self.h, 4),
                round(bw / self.w, 4), round(bh / self.h, 4))

    def _event(self, kind: str, z: _ZoneState, ts: float, frame: int, bbox: BBox | None,
               score: float) -> MotionEvent:
        self.counters["motion_events"] += 1
        return MotionEvent(kind, z.spec.id or None, ts, frame, bbox, round(score, 5))
