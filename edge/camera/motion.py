"""Motion inside fence zones for one camera (pure: frames in, events out).

Tamper is in tamper.py, tracks in tracks.py, the zone state machine in zones.py, the day/night
decision in nightmode.py.

One `MotionDetector` per camera. It takes grayscale frames at the detect size with their
time stamps and returns `MotionEvent`s. No I/O, no clock: the caller supplies `ts`.

Per frame:
1. A smooth illumination field (background / frame at 32x18) is multiplied into the frame,
   so auto-exposure, dusk and cloud shadows do not look like motion.
2. A global translation (camera shake) is estimated and the background moved to the picture;
   the difference is taken against a running-average background. After a (re)learn the
   background is a cumulative mean until it reaches the running average's memory. At night
   the signed difference is averaged over a small box first (IR noise vs a person's contrast).
3. The threshold follows the measured noise (robust median of the difference) with a floor
   and a Weber term; opening plus a two-frame persistence test remove rain and speckle.
4. A sudden change over a large part of the picture (lights, clouds, IR switch) is not
   motion: the background is re-learnt, the change is counted, zones are frozen briefly.
5. Blobs of the change are followed as tracks (tracks.py); only tracks that behave like a
   person feed the zones (zones.py: changed area vs `min_area`, dwell frames, quiet period).
6. Tamper (covered, moved, defocused): `edge.camera.tamper.TamperDetector`; while it holds,
   the background is re-learnt and open motion events end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.camera.nightmode import NightMode
from edge.camera.personcheck import HogPersonCheck
from edge.camera.tamper import TAMPER_END, TAMPER_START, TamperDetector
from edge.camera.tracks import Perspective, Track, Tracker, TrackParams, find_blobs
from edge.camera.walks import WalkEvidence
from edge.camera.zones import (
    MOTION_END,
    MOTION_START,
    BBox,
    MotionEvent,
    Polygon,
    ZoneFrame,
    Zones,
    ZoneSpec,
    rasterize,
)
from protocols.bounds import Range, check_bounds

_SMALL = (160, 90)  # size of the statistics / tamper image
_LOW = (32, 18)  # size of the illumination field
_SHAKE_PIXELS = 1500  # strongest-gradient pixels of the 160x90 picture used for the shake estimate

__all__ = ["MOTION_END", "MOTION_START", "TAMPER_END", "TAMPER_START", "DetectorSpec", "MotionDetector",
           "MotionEvent", "ZoneSpec"]


# Bounds of DetectorSpec. width, height and fps are the site config's `detect:` ranges
# (protocols.site_config.Detect); the rest keep the detector's arithmetic meaningful.
_DETECTOR_BOUNDS = {
    "width": Range(ge=32, le=3840), "height": Range(ge=32, le=2160), "fps": Range(gt=0, le=30),
    "quiet_s": Range(gt=0, le=3600), "outside_min_area": Range(gt=0, le=1), "outside_dwell_frames": Range(ge=1, le=100),
    "bg_tau_s": Range(gt=0, le=3600), "min_threshold": Range(ge=0, le=255), "noise_k": Range(ge=0, le=100),
    "relative_threshold": Range(ge=0, le=1), "global_fraction": Range(gt=0, le=1), "settle_s": Range(ge=0, le=60),
    "tamper_hold_s": Range(ge=0, le=3600), "tamper_clear_s": Range(ge=0, le=3600),
    "tamper_ref_tau_s": Range(gt=0, le=86400), "warmup_s": Range(ge=0, le=60), "min_blob_px": Range(ge=1),
    "night_box": Range(ge=1, le=15), "night_box_sigma": Range(ge=0, le=255),
    "person_check_threshold": Range(ge=-20, le=20),
    "walk_memory_s": Range(gt=0, le=10), "walk_clip": Range(gt=0, le=100),
    "walk_blur": Range(ge=1, le=9), "shake_iters": Range(ge=1, le=5),
    "dynamic_k": Range(ge=0, le=20), "dynamic_tau_s": Range(gt=0, le=600),
}


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
    # With tracks, noise that passes the threshold is rejected by its behaviour, so the threshold
    # can be lower than a blob detector's (9 / 4.5 sigma / 7 %): faint and far people are found.
    min_threshold: float = 5.0  # grey levels; floor of the noise-adaptive threshold
    noise_k: float = 3.5  # threshold = max(min_threshold, noise_k * sigma, relative_threshold * bg)
    relative_threshold: float = 0.04
    global_fraction: float = 0.30  # changed share of the picture that means "global change"
    settle_s: float = 0.6  # zones frozen this long after a global change
    tamper_hold_s: float = 3.0
    tamper_clear_s: float = 2.0
    tamper_ref_tau_s: float = 10.0
    warmup_s: float = 1.0
    perspective: Perspective | None = None  # person height by image row (tracks.py)
    tracks: bool = True  # zone events only for tracks that behave like a person
    track_params: TrackParams = field(default_factory=TrackParams)
    min_blob_px: int = 6  # changed pixels of a blob worth following
    # At night the signed difference is averaged over night_box x night_box before the threshold
    # (1 = off): IR noise (sigma 5-9 per pixel) is as large as a person's IR contrast, a person
    # is an extended region and the noise is not (see docs/camera.md, "Night").
    night_box: int = 5
    night_box_sigma: float = 4.5  # ... when the per-pixel noise sigma is at least this (grey levels)
    # Walk evidence (walks.py; with a perspective, in night box mode): memory of the leaky sums and the
    # clip of one frame's normalised difference. The gate itself is TrackParams.min_walk_night.
    night_walks: bool = True
    walk_memory_s: float = 1.0
    walk_clip: float = 3.0
    walk_blur: int = 1  # extra upright box k x (2k-1) on the half-size difference before the sums
    # Off by default: a measured candidate (docs/camera.md, "Shake registration"). Shake: by day the
    # picture is registered to the background instead of the background moved to
    # the picture, so the background stays sharp (see _difference); at night the shift estimate is
    # noisy and the background would learn its errors. off | day | always. shake_iters: LK steps
    # when registering (one step otherwise; at night more steps only followed the noise).
    shake_register: str = "off"
    shake_iters: int = 2
    # By day, the threshold is at least dynamic_k x the pixel's running mean |difference| (tau
    # dynamic_tau_s): swaying bushes that a sharp, registered background no longer hides. 0 = off.
    dynamic_k: float = 0.0
    dynamic_tau_s: float = 10.0
    person_check: str = "off"  # off | night | always: HOG person check on tracks about to be confirmed
    person_check_threshold: float = -1.5  # HOG SVM score (the detector's own decision value is 0)

    def __post_init__(self) -> None:
        check_bounds(self, _DETECTOR_BOUNDS)
        if self.person_check not in ("off", "night", "always"):
            raise ValueError(f"person_check must be off, night or always, not {self.person_check!r}")
        if self.shake_register not in ("off", "day", "always"):
            raise ValueError(f"shake_register must be off, day or always, not {self.shake_register!r}")


class MotionDetector:
    """Zone motion and tamper for one camera. Call `process()` once per detect frame."""

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        w, h = spec.width, spec.height
        fps = max(spec.fps, 0.1)
        self._alpha = min(1.0, 1.0 / (spec.bg_tau_s * fps))
        self._quiet_frames = max(1, math.ceil(spec.quiet_s * fps))
        self._settle_frames = max(1, math.ceil(spec.settle_s * fps))
        self._warmup_frames = max(1, math.ceil(spec.warmup_s * fps))
        masked = rasterize(spec.masks, w, h)
        self._valid = cv2.bitwise_not(masked)
        self._valid_px = max(1, int(cv2.countNonZero(self._valid)))
        self._valid_bool = self._valid > 0
        self._valid_small = cv2.resize(self._valid, _SMALL, interpolation=cv2.INTER_NEAREST)
        self._valid_small_f = (self._valid_small > 0).astype(np.float32)
        self._shake_model: tuple[np.ndarray, ...] | None = None
        self._dyn: np.ndarray | None = None  # running mean |difference| per pixel (dynamic_k)
        self._cur_reg: np.ndarray | None = None  # this frame registered to the background (shake)
        self._shaky = 0  # frames left of per-frame shake estimation (set by a measured shake)
        outside = ZoneSpec("", (), spec.outside_min_area, spec.outside_dwell_frames, False) \
            if spec.outside_events else None
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
        self._sigma = 2.0  # noise of the difference the threshold is applied to
        self._sigma_px = 2.0  # noise of one pixel's difference (night-mode decision)
        self._sigma_fresh = False  # take the next noise measurement as it is
        self._box = 1  # averaging box of the signed difference (night_box at night)
        self._n_learn = 0  # frames since the background was (re)learnt from one frame
        self._rate = self._alpha  # background learning rate of this frame
        self._frames = 0
        self._settle = 0
        self.counters: dict[str, int] = {
            "frames": 0,
            "global_changes": 0,
            "motion_events": 0,
            "tamper_events": 0,
            "tamper_frames": 0,
        }
        self.zones = Zones(spec.zones, self._valid, self._quiet_frames, outside, self.counters)
        self._tamper = TamperDetector(fps=fps, hold_s=spec.tamper_hold_s, clear_s=spec.tamper_clear_s,
                                      ref_tau_s=spec.tamper_ref_tau_s, counters=self.counters)
        self.last_fg: np.ndarray | None = None
        self.last_global_fraction = 0.0
        self.tracker = Tracker(w, h, fps, spec.track_params, spec.perspective, counters=self.counters)
        if spec.person_check != "off":
            self.tracker.person_check = HogPersonCheck(spec.person_check_threshold, self.counters).ok
            self.tracker.check_by_day = spec.person_check == "always"
        self.night = NightMode(fps, counters=self.counters)
        self._join_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 9))
        self._person: np.ndarray | None = None  # change of confirmed tracks (zone motion)
        self._person_count = 0
        self._diff: np.ndarray | None = None
        self._diff_edge: np.ndarray | None = None  # raw difference at night (the box blurs outlines)
        self._signed_box: np.ndarray | None = None  # boxed signed difference (night box mode)
        # Walk evidence (walks.py) needs the person's size per row: only with a perspective.
        self.walks: WalkEvidence | None = None
        if spec.perspective is not None and spec.tracks and spec.night_walks:
            self.walks = WalkEvidence(w, h, fps, (spec.perspective.a, spec.perspective.b * h),
                                      memory_s=spec.walk_memory_s, clip=spec.walk_clip,
                                      blur=spec.walk_blur)
            self.tracker.walk_score = self.walks.score

    # ------------------------------------------------------------------ public API
    def process(self, gray: np.ndarray, ts: float, frame: int, chroma: float | None = None) -> list[MotionEvent]:
        """Feed one grayscale detect frame; return the events it completes.

        `chroma`: colour saturation of the frame (capture.py), for the night-mode decision;
        None when the source is grey.
        """
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
        fg, global_frac = self._foreground(cur, low, small)
        self.last_fg = fg
        self.last_global_fraction = global_frac
        jump = self._exposure_jump(small)
        night = self.night.update(self._prev_stats[0] if self._prev_stats else 128.0, self._sigma_px, chroma)
        # The box helps only where the threshold is set by the noise: with little noise (a good
        # sensor, or H.264 that already smoothed it) it would only blur small people and spread
        # compression blocks into blobs. Hysteresis of 1 grey level.
        lim = self.spec.night_box_sigma - (1.0 if self._box > 1 else 0.0)
        box = self.spec.night_box if night and self._sigma_px >= lim else 1
        if box != self._box:
            # The difference changes scale with the box: the next noise measurement is taken as it is.
            self._box, self._sigma_fresh, self._thr_map = box, True, None
        if tampered or jump or global_frac > self.spec.global_fraction:
            if not tampered:
                self.counters["global_changes"] += 1
            # The whole scene changed (or the camera is being tampered with): start over.
            self._relearn(cur, low)
            self.tracker.reset()
            if self.walks is not None:
                self.walks.reset()
            self._settle = self._settle_frames
            return events
        still = None if self._low_weight is None else (self._low_weight > 0.5).astype(np.uint8)
        # After (re)learning from one frame, the background is a cumulative mean until it reaches
        # the running average's memory: its own noise then falls as 1/sqrt(n) within a second or
        # two instead of staying that of a single frame for tau seconds (which inflated the noise
        # estimate and blinded the first seconds of a stream and every re-learn).
        self._n_learn += 1
        self._rate = max(self._alpha, 1.0 / (self._n_learn + 1))
        cv2.accumulateWeighted(low, self._bg_low, self._rate, mask=still)
        if self._cur_reg is not None:
            cur = self._cur_reg  # from here on in the background's (the mount's rest) coordinates
        self._update_background(cur, fg)
        if self.walks is not None:
            if self._box > 1 and self._signed_box is not None:
                self.walks.update(self._signed_box, self._sigma)
                self.counters["walk_frames"] = self.counters.get("walk_frames", 0) + 1
            else:
                self.walks.reset()
            self.tracker.walks_active = self.walks.best is not None
        if self._settle > 0 or self._frames <= self._warmup_frames:
            self._settle = max(0, self._settle - 1)
            self.tracker.reset()  # the background is not yet trustworthy: nothing to follow
            return events
        self._track_step(fg, ts, night, cur)
        zf = ZoneFrame(fg if self._fg_count else None, self._raw_fg if self._prev_count else None,
                       self._person if self._fg_count else None)
        events.extend(self.zones.step(zf, ts, frame, self._track_path))
        return events

    def finish(self, ts: float, frame: int) -> list[MotionEvent]:
        """End every open motion event (end of a file); tamper stays as it is."""
        return self.zones.finish(ts, frame)

    @property
    def tamper_active(self) -> bool:
        """True while a tamper event is open."""
        return self._tamper.active

    @property
    def tamper_metrics(self) -> dict[str, float]:
        """The last tamper check's measurements (diagnostics)."""
        return self._tamper.state.last_metrics

    def zone_states(self) -> dict[str | None, bool]:
        """Zone id (None = outside) -> whether motion is open there."""
        return self.zones.states()

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
        self._n_learn = 0
        self._prev_fg = None
        self._prev_count = 0
        self._thr_map = None
        self._field_cache = None
        self._shake_model = None

    def _foreground(self, cur: np.ndarray, low: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, float]:
        assert self._bg is not None
        prev = self._prev_fg
        # Quiet frames (the common case) leave empty masks: skip the morphology on them.
        prev_near = cv2.dilate(prev, self._dil_kernel) if prev is not None and self._prev_count else None
        diff = self._difference(cur, low, small, prev_near)
        self._diff = diff
        self._update_threshold(diff)
        assert self._thr_map is not None
        thr_map = self._thr_map
        if self.spec.dynamic_k > 0 and self._box == 1 and self.night.day:
            thr_map = self._dynamic_threshold(diff, thr_map)
        fg = cv2.bitwise_and(cv2.compare(diff, thr_map, cv2.CMP_GT), self._valid)
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

    def _difference(self, cur: np.ndarray, low: np.ndarray, small: np.ndarray,
                    prev_near: np.ndarray | None) -> np.ndarray:
        """|picture - background| (8 bits) after lighting and shake compensation."""
        assert self._bg is not None
        if self._field_cache is None or self._frames % 2 == 0 or prev_near is not None:
            # Lighting drifts slowly: in quiet frames the field is refreshed every other frame.
            self._field_cache = (self._illumination(low, prev_near),)
        field = self._field_cache[0]
        bg8 = cv2.convertScaleAbs(self._bg)
        reg = self.spec.shake_register == "always" or (self.spec.shake_register == "day" and self.night.day)
        shift = self._shake_shift(small, bg8, self.spec.shake_iters if reg else 1)
        self._cur_reg = None
        if shift is not None:
            # Camera shake: every textured edge differs by gradient x shift, and the noise estimate
            # then blinds the detector. The picture is moved back to the background (the mount's
            # rest position) and the background learns the moved picture: a background that learnt
            # the shaking pictures themselves is their blur, and the mesh and the gravel's texture
            # then differ from every sharp frame however well the shift is known.
            dx, dy = (-shift[0], -shift[1]) if reg else shift
            m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float32)
            size = (self.spec.width, self.spec.height)
            if reg:
                cur = self._cur_reg = cv2.warpAffine(cur, m, size, borderMode=cv2.BORDER_REPLICATE)
            else:
                bg8 = cv2.warpAffine(bg8, m, size, borderMode=cv2.BORDER_REPLICATE)
        # Compare in 8 bits (4x cheaper than float); the background itself stays float. The field is
        # smooth, so it applies to the registered picture as well.
        src = cur if field is None else cv2.convertScaleAbs(cv2.multiply(cur, field, dtype=cv2.CV_32F))
        # Not averaged over 3x3 first (tried: it helps low-contrast garments a little, but the
        # median no longer rises with rain, and steady rain then fires the zones).
        if self._box > 1:
            # Night: a person's IR contrast is ~1.5 sigma of the per-pixel noise, so a per-pixel
            # threshold finds a few of their pixels (and the opening removes those). Averaging the
            # signed difference over a k x k box keeps a person's contrast and divides the
            # (independent) noise by ~k; thin rain streaks are diluted as well.
            signed = cv2.subtract(src, bg8, dtype=cv2.CV_16S)
            if self._frames % 2 == 0:
                raw = np.abs(signed[::4, ::4][self._valid_bool[::4, ::4]])
                if raw.size:
                    k = raw.size // 2
                    self._sigma_px = 0.8 * self._sigma_px + 0.2 * 1.2533 * float(np.partition(raw, k)[k])
            # The outline sharpness of a track (tracks.edge_ratio) is judged on the raw difference:
            # a bright lens object is blurred there, while noise makes a faint blob look sharp, so
            # a faint person is never rejected as blurred.
            self._diff_edge = cv2.convertScaleAbs(signed)
            self._signed_box = cv2.blur(signed, (self._box, self._box))
            return cv2.convertScaleAbs(self._signed_box)
        self._diff_edge = self._signed_box = None
        diff = cv2.absdiff(src, bg8)
        return diff

    def _dynamic_threshold(self, diff: np.ndarray, thr_map: np.ndarray) -> np.ndarray:
        """Raise the threshold where the background itself keeps moving (swaying bushes).

        A running mean of |difference| per pixel (tau `dynamic_tau_s`, not fed where a confirmed
        person is): on still ground it is ~0.8 sigma and dynamic_k times it stays under the global
        threshold; where a bush sways back and forth it is the sway's own contrast.
        """
        rate = min(1.0, 1.0 / (self.spec.dynamic_tau_s * max(self.spec.fps, 0.1)))
        if self._dyn is None or self._n_learn <= 1:
            self._dyn = diff.astype(np.float32)
        else:
            free = None if self._person is None else cv2.bitwise_not(self._person)
            cv2.accumulateWeighted(diff, self._dyn, rate, mask=free)
        dyn = cv2.convertScaleAbs(self._dyn, alpha=self.spec.dynamic_k)
        out: np.ndarray = np.maximum(thr_map, dyn)
        return out

    def _update_threshold(self, diff: np.ndarray) -> None:
        """Noise estimate from the difference; threshold map max(floor, k*sigma, Weber term)."""
        assert self._bg is not None
        sample = diff[::4, ::4][self._valid_bool[::4, ::4]]
        early = self._n_learn <= 2 * self._warmup_frames
        if sample.size and (early or self._frames % 2 == 0 or self._thr_map is None):
            # Noise scale from the median |diff|. Rain and snow raise it on purpose: their streaks
            # then fall under the threshold, while the cap below keeps solid movers detectable.
            k = sample.size // 2
            sigma = 1.2533 * float(np.partition(sample, k)[k])
            # While the background converges, follow the measurement: the start value may be far
            # below a rainy night's, and a one-frame background's excess noise fades within frames.
            self._sigma = sigma if early or self._sigma_fresh else 0.8 * self._sigma + 0.2 * sigma
            self._sigma_fresh = False
            if self._box == 1:
                self._sigma_px = self._sigma
        thr = min(max(self.spec.min_threshold, self.spec.noise_k * self._sigma), 45.0)
        if self._thr_map is None or self._frames % 4 == 0:
            # Weber term: a residual lighting error scales with brightness, so bright sky needs more.
            # Background and noise drift slowly, so the map is refreshed every 4th frame.
            weber = cv2.convertScaleAbs(self._bg, alpha=self.spec.relative_threshold)
            self._thr_map = np.maximum(weber, np.uint8(round(thr)))

    def _shake_shift(self, small: np.ndarray, bg8: np.ndarray, iters: int) -> tuple[float, float] | None:
        """Global translation (detect px) of the picture against the background, if it matters.

        Lucas-Kanade on the 160x90 picture: d = cur - bg ~ -(gx*sx + gy*sy), solved in
        least squares over the background's strongest-gradient pixels (chosen again every 5 s
        at 5 fps). A mount that shakes by a pixel or two moves every edge; a person moves
        only their own.
        """
        if self._shake_model is None or self._frames % 25 == 0:  # the background's edges stay put
            self._shake_model = self._shake_fit(bg8)
        if not self._shake_model or (self._shaky == 0 and self._frames % 5):
            return None  # a steady camera is re-checked once a second; a shaking one every frame
        self._shaky = max(0, self._shaky - 1)
        idx, bs, gx, gy, inv = self._shake_model
        px, py = (idx % _SMALL[0]).astype(np.float32), (idx // _SMALL[0]).astype(np.float32)
        hx, hy = 0.0, 0.0  # shift in half-size px
        small_f = small.astype(np.float32)
        for _ in range(iters):
            # Gauss-Newton: sample the picture where the background's pixels are now (bilinear), so a
            # shift of a pixel or more is not under-estimated by the linearisation.
            d = _bilinear(small_f, px + hx, py + hy) - bs
            d -= float(d.mean())  # an exposure offset is not a shift
            ux, uy = (-(inv @ np.array([float(gx @ d), float(gy @ d)]))).tolist()
            hx, hy = hx + ux, hy + uy
            if ux * ux + uy * uy < 0.01:
                break
        sx, sy = 2.0 * hx, 2.0 * hy  # half-size -> detect px
        if sx * sx + sy * sy < 0.3 * 0.3 or sx * sx + sy * sy > 16.0:
            return None  # steady camera, or not a shake (a pan is tamper, a jump a global change)
        self._shaky = 25
        self.counters["shake_frames"] = self.counters.get("shake_frames", 0) + 1
        return sx, sy

    def _shake_fit(self, bg8: np.ndarray) -> tuple[np.ndarray, ...]:
        """(pixel indices, background values, gradients, inverse normal matrix), or () if too flat."""
        bs = cv2.resize(bg8, _SMALL, interpolation=cv2.INTER_AREA).astype(np.float32)
        gx = cv2.Sobel(bs, cv2.CV_32F, 1, 0, ksize=3, scale=0.125).ravel()
        gy = cv2.Sobel(bs, cv2.CV_32F, 0, 1, ksize=3, scale=0.125).ravel()
        mag = (np.abs(gx) + np.abs(gy)) * self._valid_small_f.ravel()
        idx = np.argpartition(mag, -_SHAKE_PIXELS)[-_SHAKE_PIXELS:]
        gxs, gys = gx[idx], gy[idx]
        a = np.array([[float(gxs @ gxs), float(gxs @ gys)], [float(gxs @ gys), float(gys @ gys)]])
        # Too little texture (or all edges one way) to measure a shift; shake then matters little.
        if float(np.trace(a)) / _SHAKE_PIXELS < 1.0 or np.linalg.det(a) < 0.05 * float(np.trace(a)) ** 2:
            return ()
        return idx, bs.ravel()[idx], gxs, gys, np.linalg.inv(a)

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
        out: np.ndarray = cv2.resize(field, (self.spec.width, self.spec.height), interpolation=cv2.INTER_LINEAR)
        return out

    def _update_background(self, cur: np.ndarray, fg: np.ndarray) -> None:
        assert self._bg is not None
        if not self._fg_count:
            cv2.accumulateWeighted(cur, self._bg, self._rate)
            return
        cv2.accumulateWeighted(cur, self._bg, self._rate, mask=cv2.bitwise_not(fg))
        # Moving things still fade in slowly, so a parked object or a ghost cannot hold motion forever.
        cv2.accumulateWeighted(cur, self._bg, self._alpha * 0.25, mask=fg)

    def _track_step(self, fg: np.ndarray, ts: float, night: bool, gray: np.ndarray) -> None:
        """Follow this frame's blobs; the zones then see only the change of confirmed tracks."""
        if not self.spec.tracks:
            self._person, self._person_count = fg, self._fg_count
            return
        if not self._fg_count:
            self.tracker.update([], ts, night)
            self._person, self._person_count = None, 0
            return
        blobs, _labels = find_blobs(fg, self._join_kernel, self.spec.min_blob_px)
        edge_src = self._diff if self._diff_edge is None else self._diff_edge
        tracks = self.tracker.update(blobs, ts, night, edge_src, fg, gray)
        keep = [t.blob for t in tracks if t.confirmed and t.blob is not None]
        if not keep:
            self._person, self._person_count = None, 0
            return
        # A confirmed person counts with its whole box: a low-contrast person's changed pixels are
        # a fraction of their silhouette (head, a sleeve, a leg), the box is about the silhouette.
        person = np.zeros_like(fg)
        for b in keep:
            cv2.rectangle(person, (b.x, b.y), (b.x + b.w - 1, b.y + b.h - 1), 255, -1)
        self._person = cv2.bitwise_and(person, self._valid)
        self._person_count = cv2.countNonZero(self._person)

    def _track_path(self, bbox: BBox | None) -> tuple[tuple[float, float], ...]:
        """Foot-point path of the confirmed track nearest to an event's box (evidence)."""
        if bbox is None:
            return ()
        cx, cy = bbox[0] + bbox[2] / 2, bbox[1] + bbox[3]
        best: Track | None = None
        best_d = math.inf
        for t in self.tracker.tracks:
            if t.confirmed and t.path:
                d = math.hypot(t.path[-1][0] - cx, t.path[-1][1] - cy)
                if d < best_d:
                    best, best_d = t, d
        return tuple((round(x, 4), round(y, 4)) for x, y in best.path) if best is not None else ()

    def _tamper_step(
        self, small: np.ndarray, gray: np.ndarray, ts: float, frame: int, events: list[MotionEvent]
    ) -> bool:
        busy = self.zones.busy
        self._tamper.night = self.night.night
        tampered, change = self._tamper.step(small, gray, ts, self._frames, self.last_global_fraction, busy)
        if change is not None:
            events.append(MotionEvent(change.kind, None, ts, frame, None, None, change.reason))
            if change.kind == TAMPER_START:
                events.extend(self.finish(ts, frame))  # blind from now on: open motion ends here
        return tampered


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float32 `img` sampled at (x, y) (float arrays), bilinear, clamped to the picture."""
    h, w = img.shape
    x = np.clip(x, 0.0, w - 1.001)
    y = np.clip(y, 0.0, h - 1.001)
    x0, y0 = x.astype(np.int32), y.astype(np.int32)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bot = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    out: np.ndarray = top * (1 - fy) + bot * fy
    return out
