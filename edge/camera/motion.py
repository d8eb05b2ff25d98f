"""Motion inside fence zones for one camera (pure: frames in, events out): the detector's glue.

The parts: the background and the lighting correction in background.py, camera shake in
shake.py, the noise-following threshold in threshold.py, the change mask in changemask.py,
tracks in tracks.py, the zone state machine in zones.py, the day/night decision in
nightmode.py, tamper in tamper.py.

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
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.camera.background import LOW, Background
from edge.camera.changemask import ChangeMask
from edge.camera.nightmode import NightMode
from edge.camera.personcheck import HogPersonCheck
from edge.camera.shake import ShakeEstimator, align
from edge.camera.stacking import DiffHistory, path_coherence
from edge.camera.tamper import TAMPER_END, TAMPER_START, TamperDetector
from edge.camera.threshold import NoiseThreshold
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

_SMALL = (160, 90)  # size of the statistics / tamper / shake image

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
    "dynamic_k": Range(ge=0, le=20), "dynamic_tau_s": Range(gt=0, le=600), "dynamic_cap": Range(gt=0, le=20),
    "stack_frames": Range(ge=3, le=25), "blob_person_share": Range(ge=0, le=1),
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
    # By day, with a perspective (0 = off): a small blob (under the joined-area estimate's ~38 px) is
    # followed when its changed pixels, counted exactly, are at least this share of a person's area
    # at its foot row (h x 0.35 h): a far or crawling person's few pixels are a large part of them.
    blob_person_share: float = 0.06
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
    # the picture, so the background stays sharp (shake.align); at night the shift estimate is
    # noisy and the background would learn its errors. off | day | always. shake_iters: LK steps
    # when registering (one step otherwise; at night more steps only followed the noise).
    shake_register: str = "off"
    shake_iters: int = 2
    # By day, the threshold is at least dynamic_k x the pixel's running mean |difference| (tau
    # dynamic_tau_s): swaying bushes that a sharp, registered background no longer hides. 0 = off.
    dynamic_k: float = 0.0
    dynamic_tau_s: float = 10.0
    # Guard of the dynamic threshold (off by default; docs/camera.md, "Dynamic threshold guard"): its
    # running mean is not fed where *any* track is (a crawler lingers before it is confirmed), and it
    # counts up to dynamic_cap x sigma (a fine mesh under sub-pixel shake, or the first difference
    # after a re-learn, keeps a high mean that would hide a person for tau).
    dynamic_guard: bool = False
    dynamic_cap: float = 2.0
    # The night coherence check (stacking.py; on when TrackParams.min_coherence_night > 0, off by default):
    # frames kept, and whether patches are also cut at the track's still median foot point.
    stack_frames: int = 5
    stack_still: bool = True
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
        self._quiet_frames = max(1, math.ceil(spec.quiet_s * fps))
        self._settle_frames = max(1, math.ceil(spec.settle_s * fps))
        self._warmup_frames = max(1, math.ceil(spec.warmup_s * fps))
        self._valid = cv2.bitwise_not(rasterize(spec.masks, w, h))
        self._valid_small = cv2.resize(self._valid, _SMALL, interpolation=cv2.INTER_NEAREST)
        outside = ZoneSpec("", (), spec.outside_min_area, spec.outside_dwell_frames, False) \
            if spec.outside_events else None
        self.background = Background((w, h), min(1.0, 1.0 / (spec.bg_tau_s * fps)))
        self.change_mask = ChangeMask(self._valid)
        self.noise = NoiseThreshold(self._valid, min_threshold=spec.min_threshold, noise_k=spec.noise_k,
                                    relative_threshold=spec.relative_threshold, warmup_frames=self._warmup_frames,
                                    dynamic_k=spec.dynamic_k,
                                    dynamic_rate=min(1.0, 1.0 / (spec.dynamic_tau_s * max(spec.fps, 0.1))))
        self._prev_stats: tuple[float, float] | None = None
        self._box = 1  # averaging box of the signed difference (night_box at night)
        self._frames = 0
        self._settle = 0
        self.counters: dict[str, int] = {
            "frames": 0,
            "global_changes": 0,
            "motion_events": 0,
            "tamper_events": 0,
            "tamper_frames": 0,
        }
        self.shake = ShakeEstimator(self._valid_small, self.counters)
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
        self._tracked: np.ndarray | None = None  # boxes of every live track (dynamic threshold guard)
        # This frame's difference (diagnostics read them too): what the threshold saw, the raw
        # difference at night (the box blurs outlines) and the boxed signed one (night box mode).
        self._diff: np.ndarray | None = None
        self._diff_edge: np.ndarray | None = None
        self._signed_box: np.ndarray | None = None
        self._signed_raw: np.ndarray | None = None
        # Walk evidence (walks.py) needs the person's size per row: only with a perspective.
        self.walks: WalkEvidence | None = None
        if spec.perspective is not None and spec.tracks and spec.night_walks:
            self.walks = WalkEvidence(w, h, fps, (spec.perspective.a, spec.perspective.b * h),
                                      memory_s=spec.walk_memory_s, clip=spec.walk_clip,
                                      blur=spec.walk_blur)
            self.tracker.walk_score = self.walks.score
        # Coherence along the path (stacking.py): the last frames' raw differences, kept in night box mode.
        self._diffs: DiffHistory | None = None
        if spec.tracks and spec.track_params.min_coherence_night > 0:
            self._diffs = DiffHistory(spec.stack_frames)
            self.tracker.stack_score = self._stack_score

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
        low = cv2.resize(small, LOW, interpolation=cv2.INTER_AREA).astype(np.float32)
        if self.background.bg is None:
            self._relearn(gray, low)
            return events
        near = self.change_mask.near_previous()
        # `cur`: the picture in the background's (the mount's rest) coordinates (shake.align).
        diff, cur = self._difference(gray, low, small, near)
        self._diff = diff
        fg, fg_count, global_frac = self.change_mask.update(diff, self._threshold(diff), near)
        self.last_fg = fg
        self.last_global_fraction = global_frac
        jump = self._exposure_jump(small)
        night = self.night.update(self._prev_stats[0] if self._prev_stats else 128.0, self.noise.sigma_px, chroma)
        self._choose_box(night)
        if tampered or jump or global_frac > self.spec.global_fraction:
            # The whole scene changed (or the camera is being tampered with): start over.
            self._start_over(gray, low, counted=not tampered)
            return events
        self.background.learn(cur, low, fg, fg_count)
        self._walk_step()
        if self._diffs is not None:
            if self._signed_raw is not None:
                self._diffs.push(ts, self._signed_raw)
            else:
                self._diffs.reset()
        if self._settle > 0 or self._frames <= self._warmup_frames:
            self._settle = max(0, self._settle - 1)
            self.tracker.reset()  # the background is not yet trustworthy: nothing to follow
            return events
        self._track_step(fg, fg_count, ts, night, cur)
        zf = ZoneFrame(fg if fg_count else None,
                       self.change_mask.opened if self.change_mask.prev_count else None,
                       self._person if fg_count else None)
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
        self.background.relearn(cur, low)
        self.change_mask.reset()
        self.noise.reset()
        self.shake.reset()

    def _start_over(self, cur: np.ndarray, low: np.ndarray, counted: bool) -> None:
        """A global change (`counted`) or tamper: re-learn, forget the tracks, freeze the zones."""
        if counted:
            self.counters["global_changes"] += 1
        self._relearn(cur, low)
        self.tracker.reset()
        self._tracked = None
        if self.walks is not None:
            self.walks.reset()
        if self._diffs is not None:
            self._diffs.reset()
        self._settle = self._settle_frames

    def _choose_box(self, night: bool) -> None:
        """The night box (docs/camera.md, "Night"), from the night mode and the per-pixel noise."""
        # The box helps only where the threshold is set by the noise: with little noise (a good
        # sensor, or H.264 that already smoothed it) it would only blur small people and spread
        # compression blocks into blobs. Hysteresis of 1 grey level.
        lim = self.spec.night_box_sigma - (1.0 if self._box > 1 else 0.0)
        box = self.spec.night_box if night and self.noise.sigma_px >= lim else 1
        if box != self._box:
            self._box = box
            self.noise.rescaled()  # the difference changes scale with the box

    def _difference(self, cur: np.ndarray, low: np.ndarray, small: np.ndarray,
                    near: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(|picture - background| (8 bits) after lighting and shake compensation, the picture in
        the background's coordinates: registered when shake registration moved it, else `cur`)."""
        assert self.background.bg is not None
        field = self.background.field(low, near, self._frames)
        bg8 = cv2.convertScaleAbs(self.background.bg)
        reg = self.spec.shake_register == "always" or (self.spec.shake_register == "day" and self.night.day)
        shift = self.shake.shift(small, bg8, self._frames, self.spec.shake_iters if reg else 1)
        cur, bg8 = align(cur, bg8, shift, reg)
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
                self.noise.measure_pixel_noise(signed)
            # The outline sharpness of a track (tracks.edge_ratio) is judged on the raw difference:
            # a bright lens object is blurred there, while noise makes a faint blob look sharp, so
            # a faint person is never rejected as blurred.
            self._diff_edge = cv2.convertScaleAbs(signed)
            self._signed_raw = signed
            self._signed_box = cv2.blur(signed, (self._box, self._box))
            return cv2.convertScaleAbs(self._signed_box), cur
        self._diff_edge = self._signed_box = self._signed_raw = None
        return cv2.absdiff(src, bg8), cur

    def _threshold(self, diff: np.ndarray) -> np.ndarray:
        """This frame's threshold map (noise, floor, Weber term; by day the swaying background)."""
        assert self.background.bg is not None
        n_learn = self.background.n_learn
        thr_map = self.noise.update(diff, self.background.bg, n_learn, self._frames, self._box)
        if self.spec.dynamic_k > 0 and self._box == 1 and self.night.day:
            if self.spec.dynamic_guard:
                thr_map = self.noise.dynamic(diff, thr_map, n_learn, self._tracked, self.spec.dynamic_cap)
            else:
                thr_map = self.noise.dynamic(diff, thr_map, n_learn, self._person)
        return thr_map

    def _walk_step(self) -> None:
        """Feed the walk evidence the boxed difference (night box mode), else forget it."""
        if self.walks is None:
            return
        if self._box > 1 and self._signed_box is not None:
            self.walks.update(self._signed_box, self.noise.sigma)
            self.counters["walk_frames"] = self.counters.get("walk_frames", 0) + 1
        else:
            self.walks.reset()
        self.tracker.walks_active = self.walks.best is not None

    def _track_step(self, fg: np.ndarray, fg_count: int, ts: float, night: bool, gray: np.ndarray) -> None:
        """Follow this frame's blobs; the zones then see only the change of confirmed tracks."""
        if not self.spec.tracks:
            self._person = fg
            return
        if not fg_count:
            self.tracker.update([], ts, night)
            self._person = None
            self._mark_tracked()
            return
        # By day only: the night box turns IR noise into small soft blobs, and the rule was measured
        # by day (docs/camera.md, "Small blobs by their row").
        blobs, _labels = find_blobs(fg, self._join_kernel, self.spec.min_blob_px,
                                    None if night else self._min_blob_at)
        edge_src = self._diff if self._diff_edge is None else self._diff_edge
        tracks = self.tracker.update(blobs, ts, night, edge_src, fg, gray)
        self._mark_tracked()
        keep = [t.blob for t in tracks if t.confirmed and t.blob is not None]
        if not keep:
            self._person = None
            return
        # A confirmed person counts with its whole box: a low-contrast person's changed pixels are
        # a fraction of their silhouette (head, a sleeve, a leg), the box is about the silhouette.
        person = np.zeros_like(fg)
        for b in keep:
            cv2.rectangle(person, (b.x, b.y), (b.x + b.w - 1, b.y + b.h - 1), 255, -1)
        self._person = cv2.bitwise_and(person, self._valid)

    @property
    def _min_blob_at(self) -> Callable[[float], float] | None:
        """Foot row -> changed pixels a blob there needs (`blob_person_share`), None: the old estimate."""
        share, persp = self.spec.blob_person_share, self.spec.perspective
        if share <= 0 or persp is None:
            return None
        h = self.spec.height
        return lambda row: share * 0.35 * (persp.height(row / h) * h) ** 2

    def _stack_score(self, t: Track) -> float | None:
        """Coherence of a track's last frames along its path (stacking.py); None: cannot judge (seen in
        fewer than three of the kept frames, or its patches leave the picture)."""
        if self._diffs is None or t.blob is None:
            return None
        kept = [(hh, d) for hh in t.hist if (d := self._diffs.at(hh[0])) is not None]
        if len(kept) < 3:
            return None
        self.counters["stack_checks"] = self.counters.get("stack_checks", 0) + 1
        return path_coherence([(hh[0], d) for hh, d in kept], [hh for hh, _ in kept], self.noise.sigma_px,
                              still=self.spec.stack_still)

    def _mark_tracked(self) -> None:
        """Boxes of every live track (+2 px), kept out of the dynamic threshold's mean by the guard:
        whatever is being followed, person or not yet, is not the background swaying."""
        if not (self.spec.dynamic_guard and self.spec.dynamic_k > 0):
            return
        if not self.tracker.tracks:
            self._tracked = None
            return
        m = np.zeros((self.spec.height, self.spec.width), np.uint8)
        for t in self.tracker.tracks:
            _, fx, fy, bw, bh = t.last
            x0, y0 = int(fx - bw / 2) - 2, int(fy - bh) - 2
            cv2.rectangle(m, (max(0, x0), max(0, y0)), (x0 + bw + 3, int(fy) + 2), 255, -1)
        self._tracked = m

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
