"""Motion inside fence zones and camera tamper, for one camera (pure: frames in, events out).

One `MotionDetector` per camera. It takes grayscale frames at the detect size with their
time stamps and returns `MotionEvent`s. No I/O, no clock: the caller supplies `ts`.

Per frame:
1. Blur, then normalise contrast (affine match of the frame's mean/std to the background's),
   so auto-exposure and slow lighting changes do not look like motion.
2. Absolute difference against a running-average background; the threshold follows the
   measured noise (robust median of the difference), so sensor noise and compression do not
   fire. Opening plus a two-frame persistence test remove rain streaks and speckle.
3. A sudden change over a large part of the picture (lights, clouds, IR switch) is not
   motion: the background is re-learnt, the change is counted, zones are frozen briefly.
4. Per zone: changed-area fraction inside the polygon vs `min_area`, `dwell_frames`
   consecutive frames to start, a quiet period to end.
5. Tamper (covered, moved, defocused) from a slow reference of the scene's structure,
   held for a few seconds before `tamper_start`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

Polygon = tuple[tuple[float, float], ...]
BBox = tuple[float, float, float, float]

_SMALL = (160, 90)  # size of the statistics / tamper image
_LOW = (32, 18)  # size of the illumination field
_TAMPER_STRIDE = 5  # tamper metrics on every 5th detect frame (1 s at 5 fps)

MOTION_START = "motion_start"
MOTION_END = "motion_end"
TAMPER_START = "tamper_start"
TAMPER_END = "tamper_end"


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A detection zone in relative image coordinates."""

    id: str
    polygon: Polygon
    min_area: float = 0.002
    dwell_frames: int = 3
    alert: bool = True


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """Everything the detector needs; built from the site config's camera entry."""

    width: int
    height: int
    fps: float
    zones: tuple[ZoneSpec, ...] = ()
    masks: tuple[Polygon, ...] = ()
    quiet_s: float = 2.0  # no motion this long in a zone: motion_end
    outside_events: bool = True  # report motion outside every zone with zone=None
    outside_min_area: float = 0.004  # fraction of the outside area
    outside_dwell_frames: int = 3
    bg_tau_s: float = 4.0  # background time constant
    min_threshold: float = 9.0  # grey levels; floor of the noise-adaptive threshold
    noise_k: float = 4.5  # threshold = max(min_threshold, noise_k * sigma, relative_threshold * bg)
    relative_threshold: float = 0.07
    global_fraction: float = 0.30  # changed share of the picture that means "global change"
    settle_s: float = 0.6  # zones frozen this long after a global change
    tamper_hold_s: float = 3.0
    tamper_clear_s: float = 2.0
    tamper_ref_tau_s: float = 10.0
    warmup_s: float = 1.0


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


@dataclass(slots=True)
class _ZoneState:
    spec: ZoneSpec
    x0: int
    y0: int
    mask: np.ndarray  # uint8 0/255, cropped to the zone's bounding rect
    pixels: int
    active_run: int = 0
    quiet_run: int = 0
    in_motion: bool = False
    peak_score: float = 0.0
    last_bbox: BBox | None = None


@dataclass(slots=True)
class _TamperState:
    ref_grad: np.ndarray | None = None
    ref_img: np.ndarray | None = None  # 80x45 float32 picture, for the shift estimate
    ref_std: float = 0.0
    ref_sharp: float = 0.0
    structure: float = 0.0  # running structure correlation while untampered; ~0 for a featureless view
    candidate_since: float | None = None
    pending: str | None = None  # reason of the suspected tamper
    misses: int = 0
    clear_since: float | None = None
    active: bool = False
    reason: str | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)


def _rasterize(polys: tuple[Polygon, ...], w: int, h: int) -> np.ndarray:
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


class MotionDetector:
    """Zone motion and tamper for one camera. Call `process()` once per detect frame."""

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        w, h = spec.width, spec.height
        fps = max(spec.fps, 0.1)
        self._alpha = min(1.0, 1.0 / (spec.bg_tau_s * fps))
        self._ref_alpha = min(1.0, _TAMPER_STRIDE / (spec.tamper_ref_tau_s * fps))
        self._quiet_frames = max(1, math.ceil(spec.quiet_s * fps))
        self._settle_frames = max(1, math.ceil(spec.settle_s * fps))
        self._warmup_frames = max(1, math.ceil(spec.warmup_s * fps))
        masked = _rasterize(spec.masks, w, h)
        self._valid = cv2.bitwise_not(masked)
        self._valid_px = max(1, int(cv2.countNonZero(self._valid)))
        self._valid_bool = self._valid > 0
        self._valid_small = cv2.resize(self._valid, _SMALL, interpolation=cv2.INTER_NEAREST)
        self._zones: list[_ZoneState] = []
        union: np.ndarray = np.zeros((h, w), np.uint8)
        for z in spec.zones:
            zm = cv2.bitwise_and(_rasterize((z.polygon,), w, h), self._valid)
            union = cv2.bitwise_or(union, zm)
            st = _make_zone(z, zm)
            if st is not None:
                self._zones.append(st)
        if spec.outside_events:
            outside = cv2.bitwise_and(self._valid, cv2.bitwise_not(union))
            oz = ZoneSpec("", (), spec.outside_min_area, spec.outside_dwell_frames, False)
            st = _make_zone(oz, outside)
            if st is not None:
                self._zones.append(st)
        self._hann = cv2.createHanningWindow((80, 45), cv2.CV_32F)
        self._open_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        self._dil_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
        self._solid_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
        self._grow_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
        self._bg: np.ndarray | None = None
        self._bg_low: np.ndarray | None = None
        self._raw_fg: np.ndarray | None = None
        self._prev_count = 0
        self._fg_count = 0
        self._field_cache: tuple[np.ndarray | None] | None = None
        self._low_weight: np.ndarray | None = None
        self._thr_map: np.ndarray | None = None
        self._prev_stats: tuple[float, float] | None = None
        self._prev_fg: np.ndarray | None = None
        self._sigma = 2.0
        self._frames = 0
        self._settle = 0
        self._tamper = _TamperState()
        self.counters: dict[str, int] = {
            "frames": 0,
            "global_changes": 0,
            "motion_events": 0,
            "tamper_events": 0,
            "tamper_frames": 0,
        }
        self.last_fg: np.ndarray | None = None
        self.last_global_fraction = 0.0

    # ------------------------------------------------------------------ public API
    def process(self, gray: np.ndarray, ts: float, frame: int) -> list[MotionEvent]:
        """Feed one grayscale detect frame; return the events it completes."""
        if gray.shape != (self.spec.height, self.spec.width):
            gray = cv2.resize(gray, (self.spec.width, self.spec.height), interpolation=cv2.INTER_AREA)
        self._frames += 1
        self.counters["frames"] += 1
        # INTER_AREA on the way down already averages away most sensor noise: no extra blur.
        small = cv2.resize(gray, _SMALL, interpolation=cv2.INTER_AREA)
        events: list[MotionEvent] = []
        tampered = self._tamper_step(small, gray, ts, frame, events)
        cur = gray
        low = cv2.resize(small, _LOW, interpolation=cv2.INTER_AREA).astype(np.float32)
        if self._bg is None or self._bg_low is None:
            self._relearn(cur, low)
            return events
        fg, global_frac = self._foreground(cur, low)
        self.last_fg = fg
        self.last_global_fraction = global_frac
        jump = self._exposure_jump(small)
        if tampered or jump or global_frac > self.spec.global_fraction:
            if not tampered:
                self.counters["global_changes"] += 1
            # The whole scene changed (or the camera is being tampered with): start over.
            self._relearn(cur, low)
            self._settle = self._settle_frames
            return events
        still = None if self._low_weight is None else (self._low_weight > 0.5).astype(np.uint8)
        cv2.accumulateWeighted(low, self._bg_low, self._alpha, mask=still)
        self._update_background(cur, fg)
        if self._settle > 0 or self._frames <= self._warmup_frames:
            self._settle = max(0, self._settle - 1)
            return events
        for zone in self._zones:
            ev = self._zone_step(zone, fg, ts, frame)
            if ev is not None:
                events.append(ev)
        return events

    def finish(self, ts: float, frame: int) -> list[MotionEvent]:
        """End every open motion event (end of a file); tamper stays as it is."""
        out = []
        for z in self._zones:
            if z.in_motion:
                z.in_motion = False
                out.append(self._event(MOTION_END, z, ts, frame, z.last_bbox, z.peak_score))
        return out

    @property
    def tamper_active(self) -> bool:
        """True while a tamper event is open."""
        return self._tamper.active

    def zone_states(self) -> dict[str | None, bool]:
        """Zone id (None = outside) -> whether motion is open there."""
        return {(z.spec.id or None): z.in_motion for z in self._zones}

    # ------------------------------------------------------------------ motion
    def _exposure_jump(self, small: np.ndarray) -> bool:
        """A step in the picture's mean or contrast between frames (IR switch, lights, exposure)."""
        m, sd = cv2.meanStdDev(small, mask=self._valid_small)
        mean, std = float(m[0, 0]), float(sd[0, 0])
        prev = self._prev_stats
        self._prev_stats = (mean, std)
        if prev is None:
            return False
        pm, ps = prev
        return abs(mean - pm) > 0.12 * pm + 4.0 or abs(std - ps) > 0.2 * ps + 3.0

    def _relearn(self, cur: np.ndarray, low: np.ndarray) -> None:
        self._bg = cur.astype(np.float32)
        self._bg_low = low.copy()
        self._prev_fg = None
        self._prev_count = 0
        self._thr_map = None
        self._field_cache = None

    def _foreground(self, cur: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, float]:
        assert self._bg is not None
        prev = self._prev_fg
        # Quiet frames (the common case) leave empty masks: skip the morphology on them.
        prev_near = cv2.dilate(prev, self._dil_kernel) if prev is not None and self._prev_count else None
        if self._field_cache is None or self._frames % 2 == 0 or prev_near is not None:
            # Lighting drifts slowly: in quiet frames the field is refreshed every other frame.
            self._field_cache = (self._illumination(low, prev_near),)
        field = self._field_cache[0]
        # Compare in 8 bits (4x cheaper than float); the background itself stays float.
        src = cur if field is None else cv2.convertScaleAbs(cv2.multiply(cur, field, dtype=cv2.CV_32F))
        diff = cv2.absdiff(src, cv2.convertScaleAbs(self._bg))
        sample = diff[::4, ::4][self._valid_bool[::4, ::4]]
        early = self._frames <= 2 * self._warmup_frames
        if sample.size and (early or self._frames % 2 == 0 or self._thr_map is None):
            # Noise scale from the median |diff|. Rain and snow raise it on purpose: their streaks
            # then fall under the threshold, while the cap below keeps solid movers detectable.
            k = sample.size // 2
            sigma = 1.2533 * float(np.partition(sample, k)[k])
            # Early on, follow the measurement (the 2.0 start value may be far below a rainy night's).
            self._sigma = max(self._sigma, sigma) if early else 0.8 * self._sigma + 0.2 * sigma
        thr = min(max(self.spec.min_threshold, self.spec.noise_k * self._sigma), 45.0)
        if self._thr_map is None or self._frames % 4 == 0:
            # Weber term: a residual lighting error scales with brightness, so bright sky needs more.
            # Background and noise drift slowly, so the map is refreshed every 4th frame.
            weber = cv2.convertScaleAbs(self._bg, alpha=self.spec.relative_threshold)
            self._thr_map = np.maximum(weber, np.uint8(round(thr)))
        fg = cv2.bitwise_and(cv2.compare(diff, self._thr_map, cv2.CMP_GT), self._valid)
        global_frac = cv2.countNonZero(fg) / self._valid_px
        if global_frac > 0:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open_kernel)  # speckle, thin rain streaks
        count = cv2.countNonZero(fg) if global_frac > 0 else 0
        self._raw_fg = fg
        self._prev_fg, self._prev_count = fg, count
        if prev is not None and count:
            # Motion must persist near where it was a frame ago (rain and speckle do not), or be a
            # solid region at least 7x7 (a fast runner jumps past its previous outline; thin
            # rain streaks never survive the 7x7 erosion).
            keep = prev_near
            solid = cv2.erode(fg, self._solid_kernel)
            if cv2.countNonZero(solid):
                grown = cv2.dilate(solid, self._grow_kernel)
                keep = grown if keep is None else cv2.bitwise_or(keep, grown)
            fg = cv2.bitwise_and(fg, keep) if keep is not None else np.zeros_like(fg)
            count = cv2.countNonZero(fg)
        self._fg_count = count
        if count > 0.04 * self._valid_px:
            # Cleaned change spread over most of the picture (IR fade, flicker, shake, downpour) is
            # global even when no single place changed much; a person fills one or two of 16 cells.
            cells = cv2.resize(fg, (4, 4), interpolation=cv2.INTER_AREA)
            if int(np.count_nonzero(cells > 0.05 * 255)) >= 11:
                global_frac = max(global_frac, 1.0)
        return fg, global_frac

    def _illumination(self, low: np.ndarray, moving: np.ndarray | None) -> np.ndarray | None:
        """Smooth gain field bg/frame at ~1/10 picture scale, applied to the frame.

        Auto-exposure, cloud shadows and lamp fall-off are smooth and multiplicative, so they
        cancel. Where something moved a frame ago the field is interpolated from around it
        (normalised convolution), so a large object does not correct itself away or light a halo.
        """
        assert self._bg_low is not None
        if moving is None:
            weight = np.ones_like(low)
        else:
            weight = 1.0 - cv2.resize(moving, _LOW, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        self._low_weight = weight
        wsum = cv2.GaussianBlur(weight, (7, 7), 2.0) + 1e-3
        lo_f = cv2.GaussianBlur(low * weight, (7, 7), 2.0) / wsum
        lo_b = cv2.GaussianBlur(self._bg_low * weight, (7, 7), 2.0) / wsum
        field = np.clip((lo_b + 8.0) / (lo_f + 8.0), 0.4, 2.5)
        lo, hi = float(field.min()), float(field.max())
        if lo > 0.96 and hi < 1.04:  # within what the 7 % Weber term absorbs anyway
            return None  # steady light: skip the full-size multiply
        return cv2.resize(field, (self.spec.width, self.spec.height), interpolation=cv2.INTER_LINEAR)

    def _update_background(self, cur: np.ndarray, fg: np.ndarray) -> None:
        assert self._bg is not None
        if not self._fg_count:
            cv2.accumulateWeighted(cur, self._bg, self._alpha)
            return
        cv2.accumulateWeighted(cur, self._bg, self._alpha, mask=cv2.bitwise_not(fg))
        # Moving things still fade in slowly, so a parked object or a ghost cannot hold motion forever.
        cv2.accumulateWeighted(cur, self._bg, self._alpha * 0.25, mask=fg)

    def _zone_step(self, z: _ZoneState, fg: np.ndarray, ts: float, frame: int) -> MotionEvent | None:
        h, w = z.mask.shape
        roi = cv2.bitwise_and(fg[z.y0 : z.y0 + h, z.x0 : z.x0 + w], z.mask) if self._fg_count else None
        score = cv2.countNonZero(roi) / z.pixels if roi is not None else 0.0
        raw = self._raw_fg if self._prev_count else None
        if score < z.spec.min_area and raw is not None and z.active_run == 0:
            # The first frame of new motion cannot pass the persistence test yet; it still counts
            # towards dwell_frames, and the decision frame must pass it.
            raw_roi = cv2.bitwise_and(raw[z.y0 : z.y0 + h, z.x0 : z.x0 + w], z.mask)
            if cv2.countNonZero(raw_roi) / z.pixels >= z.spec.min_area:
                z.active_run = 1
                return None
        if roi is not None and score >= z.spec.min_area:
            z.active_run += 1
            z.quiet_run = 0
            z.last_bbox = self._bbox(roi, z)
            z.peak_score = max(z.peak_score, score)
            if not z.in_motion and z.active_run >= z.spec.dwell_frames:
                z.in_motion = True
                z.peak_score = score
                return self._event(MOTION_START, z, ts, frame, z.last_bbox, score)
            return None
        z.active_run = 0
        if z.in_motion and score < 0.5 * z.spec.min_area:
            z.quiet_run += 1
            if z.quiet_run >= self._quiet_frames:
                z.in_motion = False
                z.quiet_run = 0
                return self._event(MOTION_END, z, ts, frame, z.last_bbox, z.peak_score)
        return None

    def _bbox(self, roi: np.ndarray, z: _ZoneState) -> BBox:
        x, y, bw, bh = cv2.boundingRect(roi)
        W, H = self.spec.width, self.spec.height
        return (
            round((z.x0 + x) / W, 4),
            round((z.y0 + y) / H, 4),
            round(bw / W, 4),
            round(bh / H, 4),
        )

    def _event(
        self, kind: str, z: _ZoneState, ts: float, frame: int, bbox: BBox | None, score: float
    ) -> MotionEvent:
        self.counters["motion_events"] += 1
        return MotionEvent(kind, z.spec.id or None, ts, frame, bbox, round(score, 5))

    # ------------------------------------------------------------------ tamper
    def _tamper_metrics(self, small_u8: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, float, float]:
        small = small_u8.astype(np.float32)
        gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.abs(gx) + np.abs(gy)
        _, std_s = cv2.meanStdDev(small)
        std = float(std_s[0, 0])
        # Fine detail at detect resolution vs contrast: collapses when the lens is defocused.
        ex = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3))
        ey = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3))
        sharp = float(cv2.mean(ex)[0] + cv2.mean(ey)[0]) / (std + 1.0)
        return grad, std, sharp

    @staticmethod
    def _shift_img(small: np.ndarray) -> np.ndarray:
        return cv2.resize(small, (80, 45), interpolation=cv2.INTER_AREA).astype(np.float32)

    @staticmethod
    def _ncc(a: np.ndarray, b: np.ndarray) -> float:
        """Normalised cross-correlation of two same-size images (structure similarity)."""
        am, bm = a - float(cv2.mean(a)[0]), b - float(cv2.mean(b)[0])
        den = math.sqrt(float(np.dot(am.ravel(), am.ravel())) * float(np.dot(bm.ravel(), bm.ravel())))
        return float(np.dot(am.ravel(), bm.ravel())) / den if den > 1e-6 else 0.0

    def _tamper_step(
        self, small: np.ndarray, gray: np.ndarray, ts: float, frame: int, events: list[MotionEvent]
    ) -> bool:
        t = self._tamper
        # Checked every few frames, and at once after a broad change (defocus, a hand, a knock).
        if t.ref_grad is not None and self._frames % _TAMPER_STRIDE and self.last_global_fraction < 0.05:
            return t.active or t.candidate_since is not None  # tamper is slow: check every few frames
        grad, std, sharp = self._tamper_metrics(small, gray)
        if t.ref_grad is None:
            t.ref_grad, t.ref_std, t.ref_sharp = grad, std, sharp
            t.ref_img = self._shift_img(small)
            return False
        corr = self._ncc(grad, t.ref_grad)
        img = self._shift_img(small)
        assert t.ref_img is not None
        dx = dy = response = 0.0
        if corr < 0.8:  # the structure changed: estimate how far the view shifted
            # Copies: OpenCV 5 applies the window to phaseCorrelate's inputs in place.
            (dx, dy), response = cv2.phaseCorrelate(t.ref_img.copy(), img.copy(), self._hann)
        # Moved/defocused need a view with stable structure to compare; a featureless (flat, noisy)
        # view has none and must not look "moved" just because its noise decorrelates.
        textured = t.structure > 0.6
        shifted = textured and math.hypot(dx, dy) >= 4.0 and response > 0.15  # >= 5 % of the width
        # Structure gone AND the coarse picture differs: a new view. Rain or snow kill the fine
        # structure too, but the 80x45 picture stays the same.
        coarse = self._ncc(img, t.ref_img)
        new_view = textured and corr < 0.35 and coarse < 0.8
        reason = None
        if std < 0.3 * t.ref_std or (std < 3.0 and t.ref_std > 10.0):  # a flat view stays flat: not covered
            reason = "covered"
        elif new_view or shifted:
            reason = "moved"
        elif textured and sharp < 0.66 * t.ref_sharp:
            reason = "defocused"
        if reason is None and t.candidate_since is not None and not t.misses and corr < 0.5:
            # One borderline check inside a suspected tamper does not restart the hold.
            t.misses, reason = 1, t.pending or "moved"
        elif reason is not None:
            t.misses, t.pending = 0, t.pending if t.candidate_since is not None else reason
        t.last_metrics = {"std": std, "corr": corr, "sharp": sharp, "ref_sharp": t.ref_sharp,
                          "shift": math.hypot(dx, dy), "response": response, "coarse": coarse,
                          "structure": t.structure}
        if reason is None:
            t.candidate_since, t.misses, t.pending = None, 0, None
            if t.active:
                t.clear_since = ts if t.clear_since is None else t.clear_since
                if ts - t.clear_since >= self.spec.tamper_clear_s:
                    t.active, t.clear_since = False, None
                    self.counters["tamper_events"] += 1
                    events.append(MotionEvent(TAMPER_END, None, ts, frame, None, None, t.reason))
            busy = self.last_global_fraction > 0.01 or any(z.in_motion or z.active_run for z in self._zones)
            if not t.active and not busy:
                # The reference is the scene when nothing happens: a big object passing through
                # must not teach it a contrast that "covered" is then measured against.
                a = self._ref_alpha
                cv2.accumulateWeighted(grad, t.ref_grad, a)
                cv2.accumulateWeighted(img, t.ref_img, a)
                t.ref_std += a * (std - t.ref_std)
                t.ref_sharp += a * (sharp - t.ref_sharp)
                t.structure += 0.3 * (corr - t.structure)
            return t.active
        t.clear_since = None
        self.counters["tamper_frames"] += 1
        if not t.active:
            t.candidate_since = ts if t.candidate_since is None else t.candidate_since
            if ts - t.candidate_since >= self.spec.tamper_hold_s:
                t.active, t.reason = True, reason
                self.counters["tamper_events"] += 1
                events.append(MotionEvent(TAMPER_START, None, ts, frame, None, None, reason))
                events.extend(self.finish(ts, frame))  # blind from now on: open motion ends here
        return True
